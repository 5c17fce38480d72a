"""Write the inputs that the shipped recordings ran on (stress/traces/README.md).

``python make_inputs.py DIR`` writes gen.c (400 generated C functions, for
gcc), db.sql (a sqlite3 session: 20,000 rows with an index, a query, a
delete and a vacuum) and big.txt (30 MB of random bytes in base64, for pigz)
into DIR, and, for the traces in fidelity/, structs.c (structs, switches and
string tables, for gcc) and shop.sql (a sqlite3 session of three joined
tables, updates, grouping and a trigger).  Every one is drawn from a fixed
seed, so two runs write the same files.
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


def structs_c(rng: random.Random) -> str:
    out = ["#include <string.h>"]
    for i in range(300):
        fields = " ".join(f"int a{k}; char s{k}[{rng.randint(4, 40)}];" for k in range(1 + i % 6))
        out.append(f"struct s{i} {{ {fields} struct s{max(i - 1, 0)} *link; }};")
        cases = " ".join(
            f'case {c}: x->a0 += {rng.randint(1, 999)}; strcpy(x->s0, "{rng.randbytes(2).hex()}");'
            f" break;"
            for c in range(rng.randint(2, 12))
        )
        words = ", ".join(f'"{rng.randbytes(rng.randint(1, 6)).hex()}"' for _ in range(8))
        out.append(
            f"static const char *t{i}[] = {{ {words} }};\n"
            f"int g{i}(struct s{i} *x, int k) {{ switch (k & 15) {{ {cases} default: break; }}"
            f" return x->a0 + (int)strlen(t{i}[k & 7]) + (x->link ? x->link->a0 : 0); }}"
        )
    return "\n".join(out) + "\n"


def shop_sql(rng: random.Random) -> str:
    lines = [
        "create table customer(id integer primary key, name text, city text);",
        "create table product(id integer primary key, title text, price real);",
        "create table orders(id integer primary key, customer int, product int, n int, note text);",
        "create index o_c on orders(customer);",
        "create table audit(what text, at int);",
        "create trigger t_upd after update on product begin"
        " insert into audit values(old.title || '->' || new.price, new.id); end;",
        "begin;",
    ]
    lines += [
        f"insert into customer(name, city) values('{rng.randbytes(6).hex()}',"
        f" 'c{rng.randint(0, 99)}');"
        for _ in range(3000)
    ]
    lines += [
        f"insert into product(title, price) values('{rng.randbytes(rng.randint(4, 40)).hex()}',"
        f" {rng.randint(1, 10000) / 100});"
        for _ in range(2000)
    ]
    lines += [
        f"insert into orders(customer, product, n, note) values({rng.randint(1, 3000)},"
        f" {rng.randint(1, 2000)}, {rng.randint(1, 9)}, '{'x' * rng.randint(0, 300)}');"
        for _ in range(15000)
    ]
    lines += [
        "commit;",
        "select c.city, count(*), sum(o.n * p.price) from orders o join customer c on"
        " c.id = o.customer join product p on p.id = o.product group by c.city order by 3 desc;",
        "update product set price = price * 1.1 where id % 7 = 0;",
        "select title, group_concat(o.note, ',') from product p join orders o on o.product = p.id"
        " group by p.id having count(*) > 10 limit 50;",
        "delete from orders where n < 3;",
        "create index o_p on orders(product);",
        "select count(distinct customer) from orders;",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "gen.c").write_text(gen_c(random.Random(2)))
    (out / "db.sql").write_text(db_sql(random.Random(1)))
    (out / "big.txt").write_bytes(base64.encodebytes(random.Random(3).randbytes(30_000_000)))
    (out / "structs.c").write_text(structs_c(random.Random(4)))
    (out / "shop.sql").write_text(shop_sql(random.Random(6)))


if __name__ == "__main__":
    main()
