#!/usr/bin/env python3
"""Floors for the point-in-time 30-day mean of `amount` per customer over the 2M
transactions, for each of the 100k entity rows. NOT product code.

Semantics (shipyard's Aggregation window): at entity time t, the mean of the customer's
transactions with event_timestamp in (t - 30 days, t]; NULL when there are none.

  python agg_floor.py range  --data D --out res.json [--save out.parquet] [--threads T]
      DuckDB range join: entity rows JOIN transactions ON customer and the window, GROUP BY row.
  python agg_floor.py cumsum --data D --out res.json [--save out.parquet] [--threads T]
      DuckDB running sums per customer (per distinct timestamp, so ties are whole), then two
      ASOF joins (at t and at t - 30 days): mean = (S(t) - S(t-30d)) / (N(t) - N(t-30d)).

Both include reading the two parquet files; the result is materialised as Arrow.
"""

import argparse
import json
import os
import time

T0 = time.perf_counter()
FEATURE = "customer_avg_amount_30d"


def sql_range(tx, ent):
    return f"""
    WITH e AS (SELECT label_id, customer_id, event_timestamp AS ts FROM read_parquet('{ent}')),
         t AS (SELECT customer_id, event_timestamp AS ts, amount FROM read_parquet('{tx}'))
    SELECT e.label_id, avg(t.amount) AS {FEATURE}
    FROM e LEFT JOIN t
      ON t.customer_id = e.customer_id AND t.ts <= e.ts AND t.ts > e.ts - INTERVAL 30 DAY
    GROUP BY e.label_id
    """


def sql_cumsum(tx, ent):
    return f"""
    WITH d AS (SELECT customer_id, event_timestamp AS ts, sum(amount) AS s, count(*) AS n
               FROM read_parquet('{tx}') GROUP BY ALL),
         c AS (SELECT customer_id, ts,
                      sum(s) OVER w AS cs, sum(n) OVER w AS cn
               FROM d WINDOW w AS (PARTITION BY customer_id ORDER BY ts ROWS UNBOUNDED PRECEDING)),
         e AS (SELECT label_id, customer_id, event_timestamp AS ts,
                      event_timestamp - INTERVAL 30 DAY AS ts0 FROM read_parquet('{ent}')),
         hi AS (SELECT e.*, c.cs, c.cn FROM e
                ASOF LEFT JOIN c ON e.customer_id = c.customer_id AND e.ts >= c.ts),
         lo AS (SELECT hi.*, c.cs AS cs0, c.cn AS cn0 FROM hi
                ASOF LEFT JOIN c ON hi.customer_id = c.customer_id AND hi.ts0 >= c.ts)
    SELECT label_id,
           (cs - coalesce(cs0, 0)) / nullif(cn - coalesce(cn0, 0), 0) AS {FEATURE}
    FROM lo
    """


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("method", choices=["range", "cumsum"])
    ap.add_argument(
        "--data", default=os.path.join(os.environ.get("ROOT", "/tmp/peers"), "data", "features")
    )
    ap.add_argument("--out")
    ap.add_argument("--save")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    import duckdb

    res = {"tool": f"duckdb_agg_{a.method}", "import_s": time.perf_counter() - T0}
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if a.threads:
        con.execute(f"SET threads TO {a.threads}")
    tx, ent = (os.path.join(a.data, n) for n in ("transactions.parquet", "entity_df.parquet"))
    sql = (sql_range if a.method == "range" else sql_cumsum)(tx, ent)
    t, c = time.perf_counter(), time.process_time()
    tbl = con.sql(sql).to_arrow_table()
    res["historical_s"] = time.perf_counter() - t
    res["span_cpu_s"] = time.process_time() - c
    res["result_rows"] = tbl.num_rows
    res["null_cells"] = tbl.column(FEATURE).null_count
    res["duckdb_threads"] = con.execute("SELECT current_setting('threads')").fetchone()[0]
    res["duckdb_version"] = duckdb.__version__
    if a.save:
        import pyarrow.parquet as pq

        pq.write_table(tbl, a.save)
    res["total_in_process_s"] = time.perf_counter() - T0
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
