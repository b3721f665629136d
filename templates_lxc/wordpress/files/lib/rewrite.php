<?php
/*
 * Replace another site's URLs by this site's (WP_SITE_URL) everywhere in
 * the database: every text column of every table of the site, serialized
 * PHP values included. Serialized values are unserialized (no class is
 * instantiated), changed recursively and serialized again, so that their
 * lengths stay right; a value that would not serialize back to exactly the
 * same bytes unchanged is left alone and named on stderr.
 *
 * The old hosts: those of the database's own home and siteurl options (the
 * peer's, after an import or in a clone) and WP_OLD_HOSTS (the peer's
 * address and host name, space-separated). A host is replaced in URLs only:
 * http(s)://host, its JSON-escaped (https:\/\/host) and URL-encoded
 * (https%3A%2F%2Fhost) forms and //host, as a whole name (10.0.0.1 is not
 * touched inside 10.0.0.12, nor prod inside prod.example.org); the scheme
 * becomes https. Words in text stay as they are. Deployed by lxc-provisioner
 * (template wordpress).
 */
require __DIR__ . '/bootstrap.php';

require __DIR__ . '/rewriter.php';

global $wpdb;
$url = untrailingslashit(wpp_env('WP_SITE_URL'));
$new_host = (string) parse_url($url, PHP_URL_HOST);
$old_hosts = preg_split('/\s+/', wpp_env('WP_OLD_HOSTS', true), -1, PREG_SPLIT_NO_EMPTY);
foreach (['home', 'siteurl'] as $option) {
    $old_hosts[] = (string) parse_url((string) get_option($option), PHP_URL_HOST);
}
$old_hosts = array_values(array_unique(array_filter(
    $old_hosts,
    fn ($host) => $host !== '' && strcasecmp($host, $new_host) !== 0
)));
if (!$old_hosts) {
    update_option('siteurl', $url);
    update_option('home', $url);
    wpp_say("the site's URLs already name {$new_host}: nothing to rewrite");
    exit(0);
}
wpp_say('replacing the URLs of ' . implode(', ', $old_hosts) . " by {$url}");

$rewriter = new WppRewriter(wpp_url_patterns($old_hosts, $new_host));
$changed = 0;
$tables = $wpdb->get_col($wpdb->prepare('SHOW TABLES LIKE %s', $wpdb->esc_like($wpdb->prefix) . '%'));
foreach ($tables as $table) {
    $keys = [];
    $texts = [];
    foreach ($wpdb->get_results("SHOW COLUMNS FROM `{$table}`") as $column) {
        if ($column->Key === 'PRI') {
            $keys[] = $column->Field;
        }
        if (preg_match('/char|text/i', $column->Type)) {
            $texts[] = $column->Field;
        }
    }
    if (!$keys) {
        fwrite(STDERR, "warning: {$table} has no primary key; its rows are not rewritten\n");
        continue;
    }
    $key_list = implode(', ', array_map(fn ($k) => "`{$k}`", $keys));
    foreach ($texts as $column) {
        $likes = [];
        foreach ($old_hosts as $host) {
            $likes[] = $wpdb->prepare("`{$column}` LIKE %s", '%' . $wpdb->esc_like($host) . '%');
        }
        $rows = $wpdb->get_results(
            "SELECT {$key_list}, `{$column}` AS wpp_value FROM `{$table}` WHERE " . implode(' OR ', $likes),
            ARRAY_A
        );
        foreach ($rows as $row) {
            $old = (string) $row['wpp_value'];
            unset($row['wpp_value']);
            $where = "{$table}.{$column} " . http_build_query($row, '', ',');
            $new = $rewriter->value($old, $where);
            if ($new !== $old) {
                if ($wpdb->update($table, [$column => $new], $row) === false) {
                    wpp_fail("updating {$where} failed: {$wpdb->last_error}");
                }
                $changed++;
            }
        }
    }
}
update_option('siteurl', $url);
update_option('home', $url);
foreach ($rewriter->skipped as $where) {
    fwrite(STDERR, "warning: {$where}: a serialized value that does not serialize back unchanged; left as it was\n");
}
wpp_say("{$rewriter->replaced} URLs replaced in {$changed} values");
