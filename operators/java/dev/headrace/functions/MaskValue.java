package dev.headrace.functions;

import org.apache.flink.table.functions.ScalarFunction;

/** {@code hr_mask(value, rule, key_env)}: one field's value masked by one rule (see {@link Mask}). */
public final class MaskValue extends ScalarFunction {
    private static final long serialVersionUID = 1L;

    public String eval(String value, String rule, String keyEnv) {
        return Mask.apply(rule, value, keyEnv);
    }
}
