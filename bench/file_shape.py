"""The shape of adkd.py, as the README reports it: lines of Part I and Part II, the longest
functions, lines over 100 characters.

    python bench/file_shape.py
"""
import ast
from pathlib import Path

ADKD = Path(__file__).resolve().parent.parent / "adkd.py"


def shape(path=ADKD):
    source = Path(path).read_text()
    lines = source.splitlines()
    part_one = next(i for i, line in enumerate(lines, 1) if "PART I - AD-KD" in line) - 1
    part_two = next(i for i, line in enumerate(lines, 1) if "PART II - PLUMBING" in line) - 1
    functions = sorted(((node.end_lineno - node.lineno + 1, node.name, node.lineno)
                        for node in ast.walk(ast.parse(source))
                        if isinstance(node, ast.FunctionDef)), reverse=True)
    return {"lines": len(lines), "part_one": (part_one, part_two - 1),
            "part_two": (part_two, len(lines)), "longest": functions[:3],
            "longest_part_one": [f for f in functions if f[2] < part_two][:3],
            "over_100": [i for i, line in enumerate(lines, 1) if len(line) > 100]}


if __name__ == "__main__":
    s = shape()
    first, last = s["part_one"]
    print(f"adkd.py: {s['lines']} lines; Part I lines {first}-{last} ({last - first + 1}), "
          f"Part II lines {s['part_two'][0]}-{s['part_two'][1]} "
          f"({s['part_two'][1] - s['part_two'][0] + 1})")
    print("longest functions:", ", ".join(f"{name} {n}" for n, name, _ in s["longest"]))
    print("longest in Part I:", ", ".join(f"{name} {n}" for n, name, _ in s["longest_part_one"]))
    print("lines over 100 characters:", len(s["over_100"]))
