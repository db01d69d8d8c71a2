package dev.headrace.functions;

import java.time.Instant;

/**
 * The range of event times Headrace accepts. A record outside it is a dead letter, and its event
 * time never reaches the watermark: one device whose clock says 2100 would otherwise move the
 * watermark to 2100 and make every later record late.
 */
final class EventTimes {
    /** 0001-01-01T00:00:00Z: the earliest instant every store (and Flink's TIMESTAMP) can hold. */
    static final long MIN_MS = -62_135_596_800_000L;

    private EventTimes() {
    }

    /**
     * Why {@code ms} is not acceptable as an event time at wall-clock time {@code nowMs}, or null.
     * {@code maxFutureText} is the spec's own wording of the bound ("1d"), for the message.
     */
    static String outOfRange(long ms, long maxFutureMs, String maxFutureText, long nowMs) {
        if (ms < MIN_MS) {
            return "event time " + render(ms) + " is before 0001-01-01T00:00:00Z";
        }
        long limit = maxFutureMs > Long.MAX_VALUE - nowMs ? Long.MAX_VALUE : nowMs + maxFutureMs;
        if (ms > limit) {
            return "event time " + render(ms) + " is more than max_future (" + maxFutureText
                    + ") ahead of the clock (" + Instant.ofEpochMilli(nowMs) + ")";
        }
        return null;
    }

    /** An instant as ISO-8601 with its epoch milliseconds: right for any long, 1970 for none. */
    static String render(long ms) {
        return Instant.ofEpochMilli(ms) + " (" + ms + " ms)";
    }
}
