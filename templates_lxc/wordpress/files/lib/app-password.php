<?php
/*
 * app-password.php LOGIN LABEL: create an Application Password named LABEL
 * for the user LOGIN with WordPress's own WP_Application_Passwords and print
 * it, alone, on stdout. Run by /usr/local/sbin/wp-app-password. Deployed by
 * lxc-provisioner (template wordpress).
 */
require __DIR__ . '/bootstrap.php';

[$login, $label] = [$argv[1] ?? '', $argv[2] ?? ''];
$user = get_user_by('login', $login);
if (!$user) {
    wpp_fail("no WordPress user {$login}");
}
if (!wp_is_application_passwords_available_for_user($user)) {
    wpp_fail("Application Passwords are not available for {$login}");
}
$created = WP_Application_Passwords::create_new_application_password($user->ID, ['name' => $label]);
if (is_wp_error($created)) {
    wpp_fail($created->get_error_message());
}
echo $created[0], "\n";
