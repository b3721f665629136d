<?php
/*
 * Scrub personal data from a copy of a site (a staging clone synced from
 * production). Every user but the administrator (TPL_ADMIN_USER) gets a made
 * up login, name and e-mail address (userN, User N, userN@example.invalid),
 * no URL, biography or names in their profile, a random password, and
 * loses their sessions and Application Passwords; comments of anyone but
 * the administrator lose their author's e-mail address, IP address, URL and
 * user agent, and guests' names become "Commenter N"; privacy requests
 * (which hold e-mail addresses) are deleted. The administrator keeps their
 * account. Safe to re-run. Deployed by lxc-provisioner (template wordpress).
 */
require __DIR__ . '/bootstrap.php';

global $wpdb;
$admin = get_user_by('login', wpp_env('TPL_ADMIN_USER'));
$admin_id = $admin ? (int) $admin->ID : 0;
if (!$admin) {
    fwrite(STDERR, 'warning: no user ' . wpp_env('TPL_ADMIN_USER') . "; every user is scrubbed\n");
}

$users = $wpdb->get_col($wpdb->prepare("SELECT ID FROM {$wpdb->users} WHERE ID <> %d", $admin_id));
foreach ($users as $id) {
    $id = (int) $id;
    $wpdb->update($wpdb->users, [
        'user_login' => "user{$id}",
        'user_nicename' => "user-{$id}",
        'user_email' => "user{$id}@example.invalid",
        'user_url' => '',
        'display_name' => "User {$id}",
        'user_activation_key' => '',
        'user_pass' => wp_hash_password(wp_generate_password(32, true, true)),
    ], ['ID' => $id]);
    foreach (['first_name' => '', 'last_name' => '', 'nickname' => "user{$id}", 'description' => ''] as $key => $value) {
        update_user_meta($id, $key, $value);
    }
    foreach (['session_tokens', '_application_passwords', 'community-events-location'] as $key) {
        delete_user_meta($id, $key);
    }
    clean_user_cache($id);
}

$comments = $wpdb->query($wpdb->prepare(
    "UPDATE {$wpdb->comments} SET comment_author_email = IF(comment_author_email = '', '',"
    . " CONCAT('commenter', comment_ID, '@example.invalid')), comment_author_IP = '',"
    . " comment_author_url = '', comment_agent = '',"
    . " comment_author = IF(user_id = 0, CONCAT('Commenter ', comment_ID),"
    . " CONCAT('User ', user_id)) WHERE user_id <> %d OR user_id = 0",
    $admin_id
));
$requests = 0;
foreach (get_posts(['post_type' => 'user_request', 'post_status' => 'any', 'numberposts' => -1, 'fields' => 'ids']) as $id) {
    wp_delete_post($id, true);
    $requests++;
}
wpp_say(count($users) . " users and {$comments} comments scrubbed, {$requests} privacy requests deleted"
    . ($admin ? ', the administrator ' . $admin->user_login . ' kept' : ''));
