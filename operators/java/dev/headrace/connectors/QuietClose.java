package dev.headrace.connectors;

import org.apache.flink.api.common.ExecutionConfig;
import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichFunction;
import org.apache.flink.api.common.functions.RuntimeContext;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.java.typeutils.InputTypeConfigurable;
import org.apache.flink.metrics.Counter;
import org.apache.flink.runtime.state.FunctionInitializationContext;
import org.apache.flink.runtime.state.FunctionSnapshotContext;
import org.apache.flink.streaming.api.checkpoint.CheckpointedFunction;
import org.apache.flink.streaming.api.functions.sink.legacy.RichSinkFunction;
import org.apache.flink.streaming.api.functions.sink.legacy.SinkFunction;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A sink function that passes everything to {@code inner} but never lets {@code close()} throw
 * (see {@link SafeSinkFactory} for why that is safe and why it matters). The failure is logged.
 * It counts the rows it is given in the counter {@code headrace.<metric>}.
 */
final class QuietClose<T> extends RichSinkFunction<T> implements CheckpointedFunction, InputTypeConfigurable {
    private static final long serialVersionUID = 1L;
    private static final Logger LOG = LoggerFactory.getLogger(QuietClose.class);

    private final SinkFunction<T> inner;
    private final String metric;
    private transient Counter written;

    QuietClose(SinkFunction<T> inner, String metric) {
        this.inner = inner;
        this.metric = metric;
    }

    @Override
    public void setRuntimeContext(RuntimeContext context) {
        super.setRuntimeContext(context);
        if (inner instanceof RichFunction) {
            ((RichFunction) inner).setRuntimeContext(context);
        }
    }

    @Override
    public void open(OpenContext context) throws Exception {
        if (metric != null) {
            written = getRuntimeContext().getMetricGroup().addGroup("headrace").counter(metric);
        }
        if (inner instanceof RichFunction) {
            ((RichFunction) inner).open(context);
        }
    }

    @Override
    public void invoke(T value, Context context) throws Exception {
        if (written != null) {
            written.inc();
        }
        inner.invoke(value, context);
    }

    @Override
    public void writeWatermark(Watermark watermark) throws Exception {
        inner.writeWatermark(watermark);
    }

    @Override
    public void finish() throws Exception {
        inner.finish();
    }

    @Override
    public void initializeState(FunctionInitializationContext context) throws Exception {
        if (inner instanceof CheckpointedFunction) {
            ((CheckpointedFunction) inner).initializeState(context);
        }
    }

    @Override
    public void snapshotState(FunctionSnapshotContext context) throws Exception {
        if (inner instanceof CheckpointedFunction) {
            ((CheckpointedFunction) inner).snapshotState(context);
        }
    }

    @Override
    public void setInputType(TypeInformation<?> type, ExecutionConfig config) {
        if (inner instanceof InputTypeConfigurable) {
            ((InputTypeConfigurable) inner).setInputType(type, config);
        }
    }

    @Override
    public void close() {
        try {
            if (inner instanceof RichFunction) {
                ((RichFunction) inner).close();
            }
        } catch (Throwable t) {
            LOG.warn("closing the sink after a failure: {} (rows after the last checkpoint are replayed on restore)",
                    t.toString());
        }
    }
}
