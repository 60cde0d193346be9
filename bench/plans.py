#!/usr/bin/env python3
"""Reads a PostgreSQL server log on stdin and prints one plan per distinct statement
logged by auto_explain with auto_explain.log_format = json (bench/run.sh sets it for
its seeded database): the statement, then its plan as an indented tree with actual
times, rows, loops, buffers and conditions.

    ... | bench/plans.py > plans.txt
"""
import json
import re
import sys


def render(node, depth=0):
    what = node["Node Type"]
    for key, word in (("Relation Name", "on"), ("Index Name", "using"), ("CTE Name", "CTE")):
        if key in node:
            what += f" {word} {node[key]}"
    buffers = ", ".join(
        f"{name} {node[key]}"
        for key, name in (("Shared Hit Blocks", "hit"), ("Shared Read Blocks", "read"), ("Shared Dirtied Blocks", "dirtied"))
        if node.get(key)
    )
    actual = f"actual {node.get('Actual Total Time')} ms, rows {node.get('Actual Rows')}, loops {node.get('Actual Loops')}"
    lines = ["  " * depth + ("-> " if depth else "") + f"{what} ({actual})" + (f" buffers: {buffers}" if buffers else "")]
    for key in ("Index Cond", "Filter", "Recheck Cond", "Join Filter", "Hash Cond"):
        if key in node:
            lines.append("  " * (depth + 2) + f"{key}: {node[key]}")
    for child in node.get("Plans", []):
        lines += render(child, depth + 1)
    return lines


def main():
    plans, seen = [], set()
    # A log line starts with "<date> <time> <zone> [<pid>] "; continuation lines with a tab.
    for block in re.split(r"\n(?=\S+ \S+ \S+ \[\d+\] )", sys.stdin.read()):
        _, sep, body = block.partition("plan:\n")
        if not sep:
            continue
        try:
            plan = json.loads("\n".join(line[1:] if line.startswith("\t") else line for line in body.splitlines()))
        except ValueError:
            continue
        query = " ".join(plan.get("Query Text", "").split())
        if not query or query in seen:
            continue
        seen.add(query)
        plans.append("Query: " + query + "\n" + "\n".join(render(plan["Plan"])) + "\n")
    print("\n".join(plans))


main()
