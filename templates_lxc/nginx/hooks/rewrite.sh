#!/bin/bash
# Rewrite hook: after an import, the site's text files (html, htm, css, js,
# txt) still name the container the data came from. Replace its host name
# (PROV_PEER_HOSTNAME) by this container's (PROV_HOSTNAME) and its address
# (PROV_PEER_IP) by this one's (PROV_IP), as whole names only: 10.0.0.1 is
# not touched inside 10.0.0.12, nor "web" inside "webshop". Files without a
# match are left as they are. Diagnostics on stderr.
set -euo pipefail

root=/var/www/html
# Whole names: not part of a longer name before or after; a host name may
# be followed by its domain (peer.example.org), an address not by ".digit".
read -r -d '' program <<'PERL' || true
use strict;
use warnings;
my @pairs;
for my $names (["PROV_PEER_HOSTNAME", "PROV_HOSTNAME"], ["PROV_PEER_IP", "PROV_IP"]) {
    my ($from, $to) = map { $ENV{$_} // "" } @$names;
    next if $from eq "" || $to eq "" || $from eq $to;
    push @pairs, [qr/(?<![\w.-])\Q$from\E(?![\w-]|\.\d)/, $to];
}
exit 0 unless @pairs;
local $/;
for my $file (@ARGV) {
    open(my $fh, "+<:raw", $file) or die "cannot open $file: $!\n";
    my $text = <$fh> // "";
    my $count = 0;
    for my $pair (@pairs) {
        my ($pattern, $to) = @$pair;
        $count += ($text =~ s/$pattern/$to/g) || 0;
    }
    if ($count) {
        # In place: the file keeps its inode, owner and mode.
        seek($fh, 0, 0) or die "$file: $!\n";
        print {$fh} $text or die "$file: $!\n";
        truncate($fh, tell($fh)) or die "$file: $!\n";
        print STDERR "==> $file: $count replaced\n";
    }
    close($fh) or die "$file: $!\n";
}
PERL

if [[ -z "${PROV_PEER_HOSTNAME:-}${PROV_PEER_IP:-}" ]]; then
    echo "==> no peer named (PROV_PEER_HOSTNAME, PROV_PEER_IP): nothing to rewrite" >&2
    exit 0
fi
echo "==> '${PROV_PEER_HOSTNAME:-}' -> '${PROV_HOSTNAME:-}', '${PROV_PEER_IP:-}' -> '${PROV_IP:-}' in ${root}" >&2
find "${root}" -type f \( -name '*.html' -o -name '*.htm' -o -name '*.css' -o -name '*.js' \
    -o -name '*.txt' \) -print0 | xargs -0 -r perl -e "${program}"
echo "==> rewrite done" >&2
