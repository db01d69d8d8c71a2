-- Hand-written Flink SQL version of jobs/page_activity.yaml as a window table-valued function:
-- the benchmark's baseline (a'). The same source, watermark, window, measures and upsert sink as
-- (a), aggregated with TUMBLE(TABLE ...) so that Flink splits it into a local and a global
-- aggregation over mini-batches (tests/bench/jobs.py sets table.exec.mini-batch.* and
-- table.optimizer.agg-phase-strategy = TWO_PHASE). Window TVFs have no allowed lateness: records
-- behind the watermark are dropped. ${NAME} placeholders are filled in by tests/bench/run.py.

CREATE TEMPORARY TABLE clicks (
  tenant_id STRING,
  user_id STRING,
  page STRING,
  ts BIGINT,
  latency_ms BIGINT,
  `bytes` BIGINT,
  event_time AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR event_time AS event_time - INTERVAL '${OOO_S}' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = '${TOPIC}',
  'properties.bootstrap.servers' = '${BOOTSTRAP}',
  'properties.group.id' = '${GROUP}',
  -- as Headrace's source reads (connectors/kafka.py): tansu holds each fetch for the whole wait
  'properties.fetch.max.wait.ms' = '${FETCH_WAIT_MS}',
  'scan.startup.mode' = 'earliest-offset',
  'scan.bounded.mode' = 'specific-offsets',
  'scan.bounded.specific-offsets' = '${OFFSETS}',
  'scan.watermark.idle-timeout' = '30 s',
  'format' = 'json',
  'json.ignore-parse-errors' = 'true'
);

CREATE TEMPORARY TABLE page_activity_sink (
  tenant_id STRING NOT NULL,
  page STRING NOT NULL,
  window_start TIMESTAMP(3) NOT NULL,
  window_end TIMESTAMP(3) NOT NULL,
  events BIGINT,
  total_bytes BIGINT,
  avg_ms DOUBLE,
  min_ms BIGINT,
  max_ms BIGINT,
  PRIMARY KEY (tenant_id, page, window_start, window_end) NOT ENFORCED
) WITH (
  'connector' = 'jdbc',
  'url' = '${JDBC_URL}',
  'table-name' = '${TABLE}',
  'username' = 'postgres',
  'password' = '',
  'sink.buffer-flush.max-rows' = '5000',
  'sink.buffer-flush.interval' = '1 s'
);

INSERT INTO page_activity_sink
SELECT tenant_id, page, window_start, window_end,
       COUNT(*), SUM(`bytes`), AVG(CAST(latency_ms AS DOUBLE)), MIN(latency_ms), MAX(latency_ms)
FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(event_time), INTERVAL '${WINDOW_S}' SECOND(9)))
WHERE tenant_id IS NOT NULL AND page IS NOT NULL AND ts IS NOT NULL AND latency_ms IS NOT NULL
GROUP BY window_start, window_end, tenant_id, page;
