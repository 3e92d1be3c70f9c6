"""oracle_io.py - the golden files of the PyTorch loss oracles: writing them,
comparing two of them, and the command line every oracle shares.

    import oracle_io
    sys.exit(oracle_io.main(__doc__, write))

gives an oracle, whose write(path) builds its cases and writes them with
write_cases, the command line

    ORACLE.py --out GOLDEN.json
    ORACLE.py --compare GOLDEN.json NEW.json

A golden file is {"cases": [...]}, one case per line, each with "kind",
"name", "options", "inputs" and "expected". JSON has no NaN or infinity: an
oracle writes them as null itself, and write_cases refuses any that remain.
"""
import argparse
import json


def write_cases(path, cases):
    with open(path, "w") as f:
        f.write('{"cases": [\n')
        f.write(",\n".join(json.dumps(c, separators=(",", ":"), allow_nan=False) for c in cases))
        f.write("\n]}\n")
    print(f"{path}: {len(cases)} cases")


def close(a, b, rtol, atol, where, errors):
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            errors.append(f"{where}: keys {sorted(a)} != {sorted(b)}")
            return
        for k in a:
            close(a[k], b[k], rtol, atol, f"{where}.{k}", errors)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            errors.append(f"{where}: length {len(a)} != {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, rtol, atol, f"{where}[{i}]", errors)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        if not abs(a - b) <= atol + rtol * abs(b):
            errors.append(f"{where}: {a!r} != {b!r}")
    elif a != b:
        errors.append(f"{where}: {a!r} != {b!r}")


def compare(golden_path, new_path):
    """Inputs and options must match exactly; expected values to 1e-10, which
    allows for another torch's last-bit differences and nothing more."""
    with open(golden_path) as f:
        golden = json.load(f)["cases"]
    with open(new_path) as f:
        new = json.load(f)["cases"]
    errors = []
    if len(golden) != len(new):
        errors.append(f"{len(golden)} cases in {golden_path}, {len(new)} regenerated")
    for g, n in zip(golden, new):
        where = f"{g['kind']}/{g['name']}"
        for key in ("kind", "name", "options", "inputs"):
            close(g[key], n[key], 0.0, 0.0, f"{where}.{key}", errors)
        close(g["expected"], n["expected"], 1e-10, 1e-14, f"{where}.expected", errors)
    for e in errors[:40]:
        print("MISMATCH", e)
    if errors:
        print(f"FAIL: {len(errors)} differences between {golden_path} and the oracle")
        return 1
    print(f"ok: {len(golden)} cases of {golden_path} match the oracle")
    return 0


def main(doc, write):
    """The oracle's command line: doc is its module docstring, whose first line
    describes it; write(path) writes its golden file. Returns the exit code."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", help="write the golden file here")
    ap.add_argument("--compare", nargs=2, metavar=("GOLDEN", "NEW"))
    args = ap.parse_args()
    if args.out:
        write(args.out)
    if args.compare:
        return compare(*args.compare)
    if not args.out and not args.compare:
        ap.error("give --out or --compare")
    return 0
