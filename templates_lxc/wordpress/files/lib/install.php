<?php
/*
 * Install WordPress with its own functions (wp_install, as the web
 * installer does) at the site URL (WP_SITE_URL) unless it is installed,
 * then set what the template's variables say: the title and pretty
 * permalinks (the REST API at /wp-json/). The administrator (TPL_ADMIN_USER,
 * TPL_ADMIN_EMAIL, TPL_ADMIN_PASSWORD) is created at installation only: a
 * later run keeps the users as they are; a new site URL is rewrite.php's
 * (scripts/40-wordpress.sh runs it next). Safe to re-run. Deployed by
 * lxc-provisioner (template wordpress).
 */
define('WP_INSTALLING', true);
require __DIR__ . '/bootstrap.php';

// No e-mail with the password at installation (and no mailer in the container).
function wp_new_blog_notification($blog_title, $blog_url, $user_id, $password)
{
}

require_once ABSPATH . 'wp-admin/includes/upgrade.php';

$url = untrailingslashit(wpp_env('WP_SITE_URL'));
$title = wpp_env('TPL_SITE_TITLE');

if (is_blog_installed()) {
    wpp_say('WordPress is installed; keeping its data and users');
} else {
    // wp_install tests pretty permalinks with an HTTP request to the site:
    // nothing answers yet, and this tool makes no requests at all.
    add_filter('pre_http_request', function () {
        return new WP_Error('wp_provisioner_offline', 'no HTTP requests while installing');
    });
    $_SERVER['HTTP_HOST'] = (string) parse_url($url, PHP_URL_HOST);
    $result = wp_install(
        $title,
        wpp_env('TPL_ADMIN_USER'),
        wpp_env('TPL_ADMIN_EMAIL'),
        true,
        '',
        wpp_env('TPL_ADMIN_PASSWORD')  // hashed as given: wp_install only trims it
    );
    if (empty($result['user_id'])) {
        wpp_fail('wp_install did not create the administrator');
    }
    update_user_meta($result['user_id'], 'default_password_nag', false);
    update_option('siteurl', $url);
    update_option('home', $url);
    wpp_say('WordPress installed, administrator ' . wpp_env('TPL_ADMIN_USER'));
}

update_option('blogname', $title);

global $wp_rewrite;
if (get_option('permalink_structure') === '') {
    $wp_rewrite->set_permalink_structure('/%postname%/');
}
flush_rewrite_rules(false);

wpp_say("title '{$title}', permalinks " . get_option('permalink_structure'));
