
my %h; my @a;
for my $i (1..60000) { my $w = join("", map { chr(97+($i*$_)%26) } 1..(5+$i%40)); $h{$w}++; push @a, $w x (1+$i%5); if (@a > 5000) { splice(@a, int(rand(@a)), 1000); } }
my @k = sort { $h{$b} <=> $h{$a} or $a cmp $b } keys %h; print scalar(@k), "\n";
