package dev.headrace.metrics;

import io.prometheus.client.CollectorRegistry;
import io.prometheus.client.exporter.HTTPServer;
import org.apache.flink.metrics.prometheus.AbstractPrometheusReporter;
import org.apache.flink.metrics.reporter.MetricReporter;
import org.apache.flink.metrics.reporter.MetricReporterFactory;
import org.apache.flink.util.PortRange;

import java.io.IOException;
import java.lang.reflect.Field;
import java.net.InetSocketAddress;
import java.util.Iterator;
import java.util.Properties;

/**
 * Flink's Prometheus reporter, serving {@code /metrics} on {@code host} (default 127.0.0.1) at the
 * first free port of {@code port} (a range, default 9249). Flink's own reporter takes a port and
 * always listens on every interface; this one binds where it is told.
 *
 * <p>It lives in a plugin directory next to Flink's {@code flink-metrics-prometheus} jar (see
 * {@code jobs/cluster.py}), and reuses that reporter's metric registry and naming.
 */
public final class LoopbackPrometheusReporterFactory implements MetricReporterFactory {
    @Override
    public MetricReporter createMetricReporter(Properties properties) {
        return new Reporter(properties.getProperty("host", "127.0.0.1"), properties.getProperty("port", "9249"));
    }

    static final class Reporter extends AbstractPrometheusReporter {
        private final HTTPServer server;

        Reporter(String host, String ports) {
            CollectorRegistry registry = registry();
            HTTPServer started = null;
            Iterator<Integer> candidates = new PortRange(ports).getPortsIterator();
            while (started == null && candidates.hasNext()) {
                int port = candidates.next();
                try {
                    started = new HTTPServer(new InetSocketAddress(host, port), registry);
                    log.info("Started the Prometheus reporter on {}:{}.", host, port);
                } catch (IOException e) {
                    log.debug("Could not start the Prometheus reporter on {}:{}.", host, port, e);
                }
            }
            if (started == null) {
                throw new RuntimeException("Could not start the Prometheus reporter on " + host + " at any port in "
                        + ports);
            }
            server = started;
        }

        /** The registry Flink's reporter fills (package-private there). */
        private CollectorRegistry registry() {
            try {
                Field field = AbstractPrometheusReporter.class.getDeclaredField("registry");
                field.setAccessible(true);
                return (CollectorRegistry) field.get(this);
            } catch (ReflectiveOperationException e) {
                throw new IllegalStateException("this Flink's Prometheus reporter has no 'registry'", e);
            }
        }

        @Override
        public void close() {
            server.stop();
            super.close();
        }
    }
}
