<?php
/*
 * Loads WordPress for the template's command-line tools (install, rewrite,
 * anonymise, app-password), as a request over HTTPS to the site would:
 * Debian's wp-config.php picks its configuration by HTTP_HOST, and
 * WordPress allows Application Passwords only when is_ssl(). WP-Cron stays
 * off: a tool must not make HTTP requests (after an import the site URL in
 * the database is still the peer's). Deployed by lxc-provisioner.
 */
if (PHP_SAPI !== 'cli') {
    http_response_code(404);
    exit(1);
}
$_SERVER['HTTP_HOST'] = 'localhost';
$_SERVER['SERVER_NAME'] = 'localhost';
$_SERVER['SERVER_PORT'] = '443';
$_SERVER['HTTPS'] = 'on';
$_SERVER['REQUEST_METHOD'] = 'GET';
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['SERVER_PROTOCOL'] = 'HTTP/1.1';
$_SERVER['REMOTE_ADDR'] = '127.0.0.1';
define('DISABLE_WP_CRON', true);

/** Print a diagnostic line on stderr (stdout is kept for results). */
function wpp_say(string $message): void
{
    fwrite(STDERR, "==> {$message}\n");
}

/** Stop with a message on stderr and exit status 1. */
function wpp_fail(string $message): never
{
    fwrite(STDERR, "{$message}\n");
    exit(1);
}

/** A variable of the environment, required to be non-empty unless $optional. */
function wpp_env(string $name, bool $optional = false): string
{
    $value = getenv($name);
    if ($value === false || $value === '') {
        if ($optional) {
            return '';
        }
        wpp_fail("{$name} is not set");
    }
    return $value;
}

require_once '/usr/share/wordpress/wp-load.php';
