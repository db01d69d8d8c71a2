package com.example;

import org.apache.flink.table.functions.AggregateFunction;

/**
 * A Java user-defined aggregate, the same as {@code headrace.operators.examples.scores.weighted_score}:
 * the mean latency weighted by bytes. In a job: {@code score: udaf(com.example.WeightedScore,
 * latency_ms, bytes)} with {@code jars: [udafs.jar]} in the aggregate step. Build it with
 * {@code javac -cp "<pyflink>/lib/*" -d classes WeightedScore.java && jar cf udafs.jar -C classes .}
 */
public class WeightedScore extends AggregateFunction<Double, WeightedScore.Acc> {
    /** The accumulator. */
    public static class Acc {
        public double weighted;
        public double weights;
        public double sum;
        public long count;
    }

    @Override
    public Acc createAccumulator() {
        return new Acc();
    }

    public void accumulate(Acc acc, Long latencyMs, Long bytes) {
        if (latencyMs == null) {
            return;
        }
        double weight = bytes == null ? 0 : bytes;
        acc.weighted += latencyMs * weight;
        acc.weights += weight;
        acc.sum += latencyMs;
        acc.count++;
    }

    @Override
    public Double getValue(Acc acc) {
        if (acc.weights > 0) {
            return acc.weighted / acc.weights;
        }
        return acc.count == 0 ? null : acc.sum / acc.count;
    }
}
