-- Hand-written Flink SQL version of jobs/page_activity.yaml: the benchmark's baseline (a).
-- Same source topic, watermark, window, lateness, measures and upsert sink, but no JSON Schema
-- validation and no dead-letter output: the `json` format parses straight into columns and
-- drops what it cannot parse. ${NAME} placeholders are filled in by tests/bench/run.py.

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
SELECT tenant_id, page,
       CAST(TUMBLE_START(event_time, INTERVAL '${WINDOW_S}' SECOND(9)) AS TIMESTAMP(3)),
       CAST(TUMBLE_END(event_time, INTERVAL '${WINDOW_S}' SECOND(9)) AS TIMESTAMP(3)),
       COUNT(*), SUM(`bytes`), AVG(CAST(latency_ms AS DOUBLE)), MIN(latency_ms), MAX(latency_ms)
FROM clicks
WHERE tenant_id IS NOT NULL AND page IS NOT NULL AND ts IS NOT NULL AND latency_ms IS NOT NULL
GROUP BY TUMBLE(event_time, INTERVAL '${WINDOW_S}' SECOND(9)), tenant_id, page;
