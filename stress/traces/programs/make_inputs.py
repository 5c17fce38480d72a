"""Write the inputs that the shipped recordings ran on (stress/traces/README.md).

``python make_inputs.py DIR`` writes gen.c (400 generated C functions, for
gcc), db.sql (a sqlite3 session: 20,000 rows with an index, a query, a
delete and a vacuum) and big.txt (30 MB of random bytes in base64, for pigz)
into DIR.  Every one is drawn from a fixed seed, so two runs write the same
files.
"""

import base64
import random
import sys
from pathlib import Path


def gen_c(rng: random.Random) -> str:
    out = ["#include <stdio.h>", "#include <stdlib.h>", "#include <string.h>"]
    out.append("static int f0(int *a, int n) { return n ? a[0] : 0; }")
    for i in range(1, 400):
        out.append(
            f"static int f{i}(int *a, int n) {{ int s = 0; for (int j = 0; j < n; j++)"
            f" {{ s += a[j] * {rng.randint(1, 99)} ^ (s >> {rng.randint(1, 7)});"
            f" if (s > {rng.randint(1000, 9999)}) s -= f{i - 1}(a + 1, n / 2); }} return s; }}"
        )
    calls = " + ".join(f"f{i}(a, 64)" for i in range(0, 400, 7))
    out.append(f'int main(void) {{ int a[64] = {{0}}; printf("%d\\n", {calls}); return 0; }}')
    return "\n".join(out)


def db_sql(rng: random.Random) -> str:
    lines = [
        "create table t(id integer primary key, name text, v real, blob blob);",
        "create index ti on t(name);",
        "begin;",
    ]
    for _ in range(20000):
        lines.append(
            f"insert into t(name,v,blob) values('{rng.randbytes(8).hex()}', {rng.random()},"
            f" randomblob({rng.randint(10, 3000)}));"
        )
    lines += [
        "commit;",
        "select count(*), sum(length(blob)) from t where name like 'a%';",
        "select name from t order by v limit 5;",
        "delete from t where v < 0.5;",
        "vacuum;",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "gen.c").write_text(gen_c(random.Random(2)))
    (out / "db.sql").write_text(db_sql(random.Random(1)))
    (out / "big.txt").write_bytes(base64.encodebytes(random.Random(3).randbytes(30_000_000)))


if __name__ == "__main__":
    main()
