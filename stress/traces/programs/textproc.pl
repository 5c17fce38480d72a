# Text processing for the fidelity traces: lines of words made from a fixed seed,
# split, matched, rewritten, counted, sorted and joined again.
srand(5);
my @syll = qw(ka lo mi ne ru sa ti vo xe zu an el or um ip);
my (%count, %first, @kept);
for my $n (1 .. 40000) {
    my $line = join " ", map { join "", map { $syll[rand @syll] } 1 .. 1 + int(rand 4) } 1 .. 3 + int(rand 12);
    $line =~ s/\b(\w)(\w*)/\u$1$2/g if $n % 3 == 0;
    my @words = split /\s+/, $line;
    for my $w (@words) { $count{lc $w}++; $first{lc $w} //= $n; }
    push @kept, sprintf("%06d:%s", $n, join(",", grep { length > 4 } @words));
    splice(@kept, int(rand @kept), 200) if @kept > 3000;
}
my @top = (sort { $count{$b} <=> $count{$a} or $a cmp $b } keys %count)[0 .. 19];
print join("\n", map { "$_ $count{$_} $first{$_}" } @top), "\n", scalar(@kept), "\n";
