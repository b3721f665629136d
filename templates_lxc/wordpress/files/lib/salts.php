<?php
/*
 * Print a new /etc/wordpress/salts.php: WordPress's eight authentication
 * keys and salts, random. New ones log everybody out (Application Passwords
 * stay valid). Deployed by lxc-provisioner (template wordpress).
 */
echo "<?php\n// Made by lxc-provisioner (template wordpress); new in every clone.\n";
foreach (['AUTH', 'SECURE_AUTH', 'LOGGED_IN', 'NONCE'] as $name) {
    foreach (['KEY', 'SALT'] as $kind) {
        printf("define('%s_%s', '%s');\n", $name, $kind, bin2hex(random_bytes(32)));
    }
}
