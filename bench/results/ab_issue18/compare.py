import csv
runs = ["old_1", "new_1", "old_2", "new_2"]
data = {}
for r in runs:
    for row in csv.DictReader(open(f"/tmp/ab/bq_{r}/cpu.csv")):
        if row["provider"] in ("fastrnn-numba", "reference") and row["speedup_vs_torch"] and row["section"] in ("matrix", "sweeps"):
            key = (row["section"], row["axis"], row["cell"], row["variant"], row["mode"], row["T"], row["B"], row["H"], row["provider"])
            data.setdefault(key, {})[r] = float(row["speedup_vs_torch"])
print("| section | case | provider | old run 1 | new run 1 | old run 2 | new run 2 | new/old (mean of pairs) |")
print("|---|---|---|---|---|---|---|---|")
ratios = []
for k, v in data.items():
    if len(v) < 4: continue
    rr = (v["new_1"] / v["old_1"] + v["new_2"] / v["old_2"]) / 2
    if k[-1] == "fastrnn-numba": ratios.append(rr)
    case = f"{k[2]} {k[3]} {k[4]} ({k[5]}, {k[6]}, {k[7]})"
    print(f"| {k[0]}{'/' + k[1] if k[1] else ''} | {case} | {k[-1]} | " + " | ".join(f"{v[r]:.2f}×" for r in runs) + f" | {rr:.2f} |")
ratios.sort()
print(f"\nfastrnn-numba speedup, new/old over {len(ratios)} cases: median {ratios[len(ratios)//2]:.3f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}")
# run-to-run spread of old alone
spread = sorted(v["old_2"] / v["old_1"] for k, v in data.items() if len(v) == 4 and k[-1] == "fastrnn-numba")
print(f"old run 2 / old run 1 over the same cases: median {spread[len(spread)//2]:.3f}, range {spread[0]:.2f}-{spread[-1]:.2f}")
