<?php
/*
 * The URL replacement of rewrite.php, apart from WordPress's database so that
 * it can be tried on its own: wpp_url_patterns() says what is replaced,
 * WppRewriter applies it to a value, serialized PHP values included (it needs
 * WordPress's is_serialized()). Deployed by lxc-provisioner (template
 * wordpress).
 */

/** The replacements for every old host: regex => replacement, for preg_replace_callback. */
function wpp_url_patterns(array $old_hosts, string $new_host): array
{
    $patterns = [];
    foreach ($old_hosts as $old) {
        $host = preg_quote($old, '~');
        $end = '(?![A-Za-z0-9_-]|\.[A-Za-z0-9])';
        $patterns["~\\bhttps?://{$host}{$end}~i"] = "https://{$new_host}";
        $patterns["~\\bhttps?:\\\\/\\\\/{$host}{$end}~i"] = "https:\\/\\/{$new_host}";
        $patterns["~\\bhttps?%3A%2F%2F{$host}{$end}~i"] = "https%3A%2F%2F{$new_host}";
        $patterns["~(?<=[\"'(=\\s])//{$host}{$end}~i"] = "//{$new_host}";
    }
    return $patterns;
}

final class WppRewriter
{
    public int $replaced = 0;
    /** @var list<string> */
    public array $skipped = [];

    public function __construct(private array $patterns)
    {
    }

    /** A column's value with the URLs replaced; serialized values kept valid. */
    public function value(string $text, string $where): string
    {
        if (!is_serialized($text)) {
            return $this->plain($text);
        }
        $data = @unserialize($text, ['allowed_classes' => false]);
        if (($data === false && $text !== 'b:0;') || $this->serialize($data, false, $where) !== $text) {
            $this->skipped[] = $where;
            return $text;
        }
        return $this->serialize($data, true, $where);
    }

    private function plain(string $text): string
    {
        foreach ($this->patterns as $pattern => $replacement) {
            $text = preg_replace_callback($pattern, fn () => $replacement, $text, -1, $count);
            $this->replaced += $count;
        }
        return $text;
    }

    /**
     * serialize() of a value unserialize() returned, with the URLs replaced
     * in its strings if $replace; objects (incomplete: no class is loaded)
     * keep their class name and properties.
     */
    private function serialize(mixed $value, bool $replace, string $where): string
    {
        if (is_string($value)) {
            return serialize($replace ? $this->value($value, $where) : $value);
        }
        if (is_array($value)) {
            return 'a:' . count($value) . ':{' . $this->members($value, $replace, $where) . '}';
        }
        if (is_object($value)) {
            $members = (array) $value;
            $class = $members['__PHP_Incomplete_Class_Name'] ?? get_class($value);
            unset($members['__PHP_Incomplete_Class_Name']);
            return 'O:' . strlen($class) . ':"' . $class . '":' . count($members) . ':{'
                . $this->members($members, $replace, $where) . '}';
        }
        return serialize($value);
    }

    private function members(array $members, bool $replace, string $where): string
    {
        $out = '';
        foreach ($members as $key => $item) {
            $out .= serialize($key) . $this->serialize($item, $replace, $where);
        }
        return $out;
    }
}
