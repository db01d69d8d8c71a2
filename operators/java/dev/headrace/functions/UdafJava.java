package dev.headrace.functions;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.AggregateFunction;
import org.apache.flink.table.functions.ScalarFunction;

import java.io.File;
import java.io.IOException;
import java.lang.reflect.Method;
import java.net.URL;
import java.net.URLClassLoader;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * {@code hr_udaf_java(class, jar, rows)}: a user's Java {@link AggregateFunction} over a window's
 * rows ({@link Sketches}' {@code rows}), as text (SQL casts it to the function's type). The class
 * is loaded from its jar once per task manager; {@code createAccumulator()}, then
 * {@code accumulate(acc, ...)} per row (each JSON value converted to the parameter's type), then
 * {@code getValue(acc)}.
 */
public final class UdafJava extends ScalarFunction {
    private static final long serialVersionUID = 1L;
    /** A user's function, loaded once per class and jar, with the two methods called on it. */
    private static final class Loaded {
        final AggregateFunction<?, ?> function;
        final Method accumulate;
        final Class<?>[] types; // accumulate's parameters (getParameterTypes copies them per call)
        final Method getValue;

        Loaded(AggregateFunction<?, ?> function, Method accumulate, Method getValue) {
            this.function = function;
            this.accumulate = accumulate;
            this.types = accumulate.getParameterTypes();
            this.getValue = getValue;
        }
    }

    private static final Map<String, Loaded> LOADED = new ConcurrentHashMap<>();
    private static final JsonFactory JSON = new JsonFactory();

    public @DataTypeHint("STRING") String eval(String className, String jar, @DataTypeHint("BYTES") byte[] rows) {
        if (rows == null) {
            return null;
        }
        Object value;
        try {
            Loaded loaded = load(className, jar);
            Class<?>[] types = loaded.types;
            Object acc = loaded.function.createAccumulator();
            Object[] args = new Object[types.length];
            args[0] = acc;
            int used = java.nio.ByteBuffer.wrap(rows).getInt(0);
            byte[] all = new byte[used + 2]; // "[" rows "]": one array of the rows' arrays
            all[0] = '[';
            System.arraycopy(rows, 4, all, 1, used);
            all[used + 1] = ']';
            try (JsonParser in = JSON.createParser(all)) {
                JsonToken token = in.nextToken();
                while ((token = in.nextToken()) == JsonToken.START_ARRAY) {
                    int i = 1;
                    while ((token = in.nextToken()) != JsonToken.END_ARRAY) {
                        if (i < types.length) {
                            args[i] = convert(in, token, types[i]);
                        }
                        i++;
                    }
                    loaded.accumulate.invoke(loaded.function, args);
                }
            }
            value = loaded.getValue.invoke(loaded.function, acc);
        } catch (ReflectiveOperationException | IOException e) {
            Throwable cause = e.getCause() != null ? e.getCause() : e;
            throw new IllegalStateException("udaf " + className + " failed: " + cause, cause);
        }
        return value == null ? null : String.valueOf(value);
    }

    private static Object convert(JsonParser in, JsonToken token, Class<?> type) throws IOException {
        if (token == JsonToken.VALUE_NULL) {
            return null;
        }
        if (type == Long.class || type == long.class) {
            return in.getLongValue();
        }
        if (type == Integer.class || type == int.class) {
            return in.getIntValue();
        }
        if (type == Double.class || type == double.class) {
            return in.getDoubleValue();
        }
        if (type == Float.class || type == float.class) {
            return in.getFloatValue();
        }
        if (type == Boolean.class || type == boolean.class) {
            return in.getBooleanValue();
        }
        if (token == JsonToken.VALUE_NUMBER_INT) {
            return in.getLongValue();
        }
        if (token == JsonToken.VALUE_NUMBER_FLOAT) {
            return in.getDoubleValue();
        }
        if (token == JsonToken.VALUE_TRUE || token == JsonToken.VALUE_FALSE) {
            return in.getBooleanValue();
        }
        return in.getText();
    }

    private static Loaded load(String className, String jar) throws ReflectiveOperationException {
        String key = className + "\u0000" + jar;
        Loaded have = LOADED.get(key);
        if (have != null) {
            return have;
        }
        try {
            URLClassLoader loader = new URLClassLoader(new URL[] {new File(jar).toURI().toURL()},
                    UdafJava.class.getClassLoader());
            AggregateFunction<?, ?> function =
                    (AggregateFunction<?, ?>) loader.loadClass(className).getDeclaredConstructor().newInstance();
            Method accumulate = null;
            Method getValue = null;
            for (Method m : function.getClass().getMethods()) {
                if (m.getName().equals("accumulate") && (accumulate == null
                        || m.getParameterCount() > accumulate.getParameterCount())) {
                    accumulate = m;
                }
                if (m.getName().equals("getValue") && m.getParameterCount() == 1 && !m.isBridge()) {
                    getValue = m;
                }
            }
            if (accumulate == null || getValue == null) {
                throw new NoSuchMethodException(className + " has no public accumulate(acc, ...) and getValue(acc)");
            }
            Loaded loaded = new Loaded(function, accumulate, getValue);
            LOADED.put(key, loaded);
            return loaded;
        } catch (java.net.MalformedURLException e) {
            throw new IllegalArgumentException(jar, e);
        }
    }
}
