package dev.headrace.connectors;

import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.metrics.Counter;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.Serializable;
import java.lang.reflect.InvocationHandler;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.util.LinkedHashSet;
import java.util.Set;

/**
 * A Sink V2 (Flink's {@code org.apache.flink.api.connector.sink2.Sink}) that is {@code inner} in
 * every respect (a proxy with all of its interfaces: writer state, committer, topologies), except
 * that the writers it creates never throw from {@code close()}: the Kafka writer, for one,
 * rethrows there the sends its producer aborted when the task was cancelled. See
 * {@link SafeSinkFactory} for why a throwing close is fatal and why quiet closing loses nothing.
 * Each writer also counts the records it is given in the counter {@code headrace.<metric>}.
 */
final class QuietWriters implements InvocationHandler, Serializable {
    private static final long serialVersionUID = 1L;
    private static final Logger LOG = LoggerFactory.getLogger(QuietWriters.class);

    private final Object sink;
    private final String metric;

    private QuietWriters(Object sink, String metric) {
        this.sink = sink;
        this.metric = metric;
    }

    @SuppressWarnings("unchecked")
    static <T> T wrap(T sink, String metric) {
        return (T) proxy(sink, new QuietWriters(sink, metric));
    }

    private static Object proxy(Object target, InvocationHandler handler) {
        return Proxy.newProxyInstance(target.getClass().getClassLoader(), interfaces(target.getClass()), handler);
    }

    private static Class<?>[] interfaces(Class<?> type) {
        Set<Class<?>> all = new LinkedHashSet<>();
        for (Class<?> c = type; c != null; c = c.getSuperclass()) {
            collect(c, all);
        }
        return all.toArray(new Class<?>[0]);
    }

    private static void collect(Class<?> type, Set<Class<?>> into) {
        for (Class<?> i : type.getInterfaces()) {
            if (into.add(i)) {
                collect(i, into);
            }
        }
    }

    @Override
    public Object invoke(Object proxy, Method method, Object[] args) throws Throwable {
        Object result = call(sink, method, args);
        String name = method.getName();
        if ((name.equals("createWriter") || name.equals("restoreWriter")) && result != null) {
            Counter counter = null;
            if (metric != null && args != null && args.length > 0 && args[0] instanceof WriterInitContext) {
                counter = ((WriterInitContext) args[0]).metricGroup().addGroup("headrace").counter(metric);
            }
            return proxy(result, new QuietClose(result, counter));
        }
        return result;
    }

    static Object call(Object target, Method method, Object[] args) throws Throwable {
        try {
            return method.invoke(target, args);
        } catch (InvocationTargetException e) {
            throw e.getCause();
        }
    }

    /** A writer whose close() logs instead of throwing, counting what it writes. */
    private static final class QuietClose implements InvocationHandler {
        private final Object writer;
        private final Counter written;

        QuietClose(Object writer, Counter written) {
            this.writer = writer;
            this.written = written;
        }

        @Override
        public Object invoke(Object proxy, Method method, Object[] args) throws Throwable {
            if (written != null && method.getName().equals("write")) {
                written.inc();
            }
            if (method.getName().equals("close") && method.getParameterCount() == 0) {
                try {
                    return call(writer, method, args);
                } catch (Throwable t) {
                    LOG.warn("closing the sink writer after a failure: {} (records after the last checkpoint are "
                            + "replayed on restore)", t.toString());
                    return null;
                }
            }
            return call(writer, method, args);
        }
    }
}
