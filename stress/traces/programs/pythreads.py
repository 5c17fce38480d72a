import threading, queue, random, hashlib
q = queue.Queue(maxsize=64)
def producer(seed):
    r = random.Random(seed)
    for i in range(100):
        q.put(bytes(r.randint(10, 5000)) + str(i).encode())
    q.put(None)
def consumer(out):
    n = 0
    while True:
        item = q.get()
        if item is None:
            break
        n += len(hashlib.sha1(item).hexdigest()) + len({str(k): k for k in range(len(item) % 50)})
    out.append(n)
out = []
ps = [threading.Thread(target=producer, args=(s,)) for s in range(4)]
cs = [threading.Thread(target=consumer, args=(out,)) for _ in range(4)]
for t in ps + cs: t.start()
for t in ps + cs: t.join()
print(sum(out))
