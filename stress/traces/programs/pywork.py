# Pure-Python work for the fidelity traces (run with PYTHONMALLOC=malloc): records parsed
# from generated text, objects, dictionaries, sorting, string formatting, a small tree.
import random

rng = random.Random(11)


class Item:
    def __init__(self, name, group, price, tags):
        self.name, self.group, self.price, self.tags = name, group, price, tags

    def line(self):
        return f"{self.name};{self.group};{self.price:.2f};{'|'.join(self.tags)}"


def tree(depth):
    if depth == 0 or rng.random() < 0.2:
        return rng.randint(0, 99)
    return [rng.choice("+-*"), tree(depth - 1), tree(depth - 1)]


def evaluate(node):
    if isinstance(node, int):
        return node
    op, a, b = node[0], evaluate(node[1]), evaluate(node[2])
    return a + b if op == "+" else a - b if op == "-" else (a * b) % 100003


text = "\n".join(
    Item(
        "".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 30))),
        rng.randint(0, 40),
        rng.random() * 100,
        [str(rng.randint(0, 999)) for _ in range(rng.randint(0, 8))],
    ).line()
    for _ in range(20000)
)
groups = {}
for row in text.splitlines():
    name, group, price, tags = row.split(";")
    groups.setdefault(int(group), []).append(Item(name, int(group), float(price), tags.split("|")))
report = []
for group, items in sorted(groups.items()):
    items.sort(key=lambda item: (-item.price, item.name))
    report.append(f"{group}: {len(items)} {sum(i.price for i in items):.2f} {items[0].name}")
print(len(report), sum(evaluate(tree(12)) for _ in range(300)))
