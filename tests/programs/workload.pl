#!/usr/bin/perl
# Allocation-heavy Perl workload for Tally's LD_PRELOAD test: hashes of strings,
# regex captures and substitutions, sprintf, sort, join/split. Output is
# deterministic: hash keys are always sorted, and checksums use unpack only.
use strict;
use warnings;

my $state = 88172645463325252;
sub next_rand {
    # xorshift64: Perl's shifts on unsigned integers wrap at 64 bits.
    $state ^= $state << 13;
    $state ^= $state >> 7;
    $state ^= $state << 17;
    return $state;
}

my @syllables = qw(ka ri to me su na lo pe vi zu ho ga de bu ny ax);
sub word {
    my $n = next_rand();
    my $len = 1 + $n % 6;
    return join '', map { $syllables[($n >> (4 * $_ + 8)) & 15] } 0 .. $len - 1;
}

my $checksum = 0;
for my $round (0 .. 11) {
    my %count;
    my %by_len;
    my @lines;
    for my $i (0 .. 40000) {
        my $w = word();
        $count{$w}++;
        push @{ $by_len{ length $w } }, $w;
        push @lines, sprintf("%06d %s %s=%d;", $i, $w, uc($w), next_rand() % 1000);
    }
    my $text = join "\n", @lines;
    # Regex work: captures, global matches, substitutions building new strings.
    my $matches = 0;
    while ($text =~ /\b([a-z]+) ([A-Z]+)=(\d+);/g) {
        $matches++ if uc($1) eq $2 && $3 < 1000;
    }
    (my $swapped = $text) =~ s/(\d+) ([a-z]+) ([A-Z]+)=(\d+);/$4:$3:$2:$1/g;
    my %sum_by_key;
    while ($swapped =~ /^(\d+):([A-Z]{2})/mg) {
        $sum_by_key{$2} += $1;
    }
    my @top = (sort { $count{$b} <=> $count{$a} || $a cmp $b } keys %count)[0 .. 4];
    my @lens = map { "$_:" . scalar @{ $by_len{$_} } } sort { $a <=> $b } keys %by_len;
    my $keys = join ',', map { "$_=$sum_by_key{$_}" } sort keys %sum_by_key;
    my $sum = unpack('%32C*', $swapped) + unpack('%32C*', $keys);
    $checksum = ($checksum * 31 + $sum) % 4294967291;
    my @split = split /\n/, $text;
    die "split mismatch in round $round\n" unless @split == @lines;
    printf "round %d: words=%d matches=%d top=%s lens=%s sum=%d\n",
        $round, scalar(keys %count), $matches, join('/', @top), join(' ', @lens), $sum;
}
print "checksum=$checksum\n";
