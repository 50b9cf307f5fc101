import random

from parkgate.sessions import OpenSessions


def test_put_get_remove():
    s = OpenSessions(8)
    assert s.get("京A1") is None and len(s) == 0
    s.put("京A1", 100)
    s.put("京A2", 200)
    assert s.get("京A1") == 100 and s.get("京A2") == 200 and "京A1" in s
    s.put("京A1", 150)
    assert s.get("京A1") == 150 and len(s) == 2
    s.remove("京A1")
    assert s.get("京A1") is None and s.get("京A2") == 200 and len(s) == 1
    s.remove("京A1")
    assert len(s) == 1


def test_matches_a_dict_through_random_operations():
    random.seed(3)
    s = OpenSessions(400)     # three segments
    model = {}
    plates = ["粤B%03d" % i for i in range(500)]
    for step in range(3000):
        plate = plates[random.getrandbits(16) % len(plates)]
        if random.getrandbits(2) and len(model) < 300:
            model[plate] = 1000 + step
            s.put(plate, 1000 + step)
        else:
            model.pop(plate, None)
            s.remove(plate)
        assert len(s) == len(model)
    for plate in plates:
        assert s.get(plate) == model.get(plate), plate
    assert s.forgotten == 0


def test_full_table_forgets_the_oldest():
    s = OpenSessions(6)           # holds at most 4
    for i, t in enumerate((500, 100, 300, 400)):
        s.put("P%d" % i, t)
    assert len(s) == 4 == s.limit
    s.put("P9", 600)
    assert s.get("P1") is None and s.forgotten == 1 and len(s) == 4
    assert [s.get(p) for p in ("P0", "P2", "P3", "P9")] == [500, 300, 400, 600]


def test_a_large_full_table_forgets_old_entries_and_keeps_recent_ones():
    s = OpenSessions(400)
    for i in range(2000):
        s.put("P%d" % i, 1000 + i)
    assert len(s) == 300 and s.forgotten == 2000 - 300
    kept = [i for i in range(2000) if s.get("P%d" % i) is not None]
    assert len(kept) == 300
    assert all(i >= 2000 - 3 * 400 for i in kept)   # nothing very old survives
    assert all(s.get("P%d" % i) == 1000 + i for i in range(1990, 2000))


def test_heap_does_not_grow_with_cars():
    import gc
    s = OpenSessions(300)
    gc.collect()
    before = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
    for i in range(200):
        s.put("苏E%05d" % i, 1000 + i)
    gc.collect()
    after = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
    assert after - before < 1024
    assert len(s) == 200 and s.get("苏E00007") == 1007
