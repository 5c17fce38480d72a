import json, random
random.seed(3)
docs = [{"id": i, "name": "x" * random.randint(1, 200), "tags": [random.random() for _ in range(random.randint(0, 30))], "nested": {"a": list(range(random.randint(0, 50)))}} for i in range(120)]
text = json.dumps(docs)
back = json.loads(text)
print(len(text), len(back))
