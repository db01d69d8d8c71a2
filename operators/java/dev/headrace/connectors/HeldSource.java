package dev.headrace.connectors;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.connector.source.Boundedness;
import org.apache.flink.api.connector.source.ReaderOutput;
import org.apache.flink.api.connector.source.Source;
import org.apache.flink.api.connector.source.SourceEvent;
import org.apache.flink.api.connector.source.SourceReader;
import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.api.connector.source.SourceSplit;
import org.apache.flink.api.connector.source.SplitEnumerator;
import org.apache.flink.api.connector.source.SplitEnumeratorContext;
import org.apache.flink.api.java.typeutils.ResultTypeQueryable;
import org.apache.flink.core.io.InputStatus;
import org.apache.flink.core.io.SimpleVersionedSerializer;

import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;

import javax.annotation.Nullable;

/**
 * A bounded source whose readers end together: a reader at the end of its input tells the
 * enumerator and waits until every reader has said so, then all end.
 *
 * <p>{@link RecordJudge}, chained after the reader, keeps the largest event time per partition
 * in union list state. Flink takes no checkpoint of a vertex with union state while some of its
 * subtasks have finished and others have not (each would abort: "has used UnionListState, but part
 * of its tasks are FINISHED"). A bounded run whose partitions end at different offsets then took
 * no checkpoint from the first partition's end to the last's, and one killed in between resumed
 * from far back. Held readers keep the vertex whole until every partition is read.
 */
final class HeldSource<T, S extends SourceSplit, E> implements Source<T, S, E>, ResultTypeQueryable<T> {
    private static final long serialVersionUID = 1L;

    private final Source<T, S, E> inner;

    HeldSource(Source<T, S, E> inner) {
        this.inner = inner;
    }

    @Override
    public Boundedness getBoundedness() {
        return inner.getBoundedness();
    }

    @Override
    public SourceReader<T, S> createReader(SourceReaderContext context) throws Exception {
        return new Reader<>(inner.createReader(context), context);
    }

    @Override
    public SplitEnumerator<S, E> createEnumerator(SplitEnumeratorContext<S> context) throws Exception {
        return new Enumerator<>(inner.createEnumerator(context), context);
    }

    @Override
    public SplitEnumerator<S, E> restoreEnumerator(SplitEnumeratorContext<S> context, E checkpoint) throws Exception {
        return new Enumerator<>(inner.restoreEnumerator(context, checkpoint), context);
    }

    @Override
    public SimpleVersionedSerializer<S> getSplitSerializer() {
        return inner.getSplitSerializer();
    }

    @Override
    public SimpleVersionedSerializer<E> getEnumeratorCheckpointSerializer() {
        return inner.getEnumeratorCheckpointSerializer();
    }

    @Override
    @SuppressWarnings("unchecked")
    public TypeInformation<T> getProducedType() {
        return ((ResultTypeQueryable<T>) inner).getProducedType();
    }

    /** A reader's word that it has read all of its input. */
    static final class Ended implements SourceEvent {
        private static final long serialVersionUID = 1L;
    }

    /** The enumerator's word that every reader has. */
    static final class AllEnded implements SourceEvent {
        private static final long serialVersionUID = 1L;
    }

    static final class Reader<T, S extends SourceSplit> implements SourceReader<T, S> {
        private final SourceReader<T, S> inner;
        private final SourceReaderContext context;
        private final CompletableFuture<Void> released = new CompletableFuture<>();
        private boolean ended;

        Reader(SourceReader<T, S> inner, SourceReaderContext context) {
            this.inner = inner;
            this.context = context;
        }

        @Override
        public void start() {
            inner.start();
        }

        @Override
        public InputStatus pollNext(ReaderOutput<T> output) throws Exception {
            if (ended) {
                return released.isDone() ? InputStatus.END_OF_INPUT : InputStatus.NOTHING_AVAILABLE;
            }
            InputStatus status = inner.pollNext(output);
            if (status != InputStatus.END_OF_INPUT) {
                return status;
            }
            ended = true;
            context.sendSourceEventToCoordinator(new Ended());
            return released.isDone() ? InputStatus.END_OF_INPUT : InputStatus.NOTHING_AVAILABLE;
        }

        @Override
        public CompletableFuture<Void> isAvailable() {
            return ended ? released : inner.isAvailable();
        }

        @Override
        public List<S> snapshotState(long checkpointId) {
            return inner.snapshotState(checkpointId);
        }

        @Override
        public void addSplits(List<S> splits) {
            inner.addSplits(splits);
        }

        @Override
        public void notifyNoMoreSplits() {
            inner.notifyNoMoreSplits();
        }

        @Override
        public void handleSourceEvents(SourceEvent event) {
            if (event instanceof AllEnded) {
                released.complete(null);
            } else {
                inner.handleSourceEvents(event);
            }
        }

        @Override
        public void pauseOrResumeSplits(java.util.Collection<String> pause, java.util.Collection<String> resume) {
            inner.pauseOrResumeSplits(pause, resume);
        }

        @Override
        public void notifyCheckpointComplete(long checkpointId) throws Exception {
            inner.notifyCheckpointComplete(checkpointId);
        }

        @Override
        public void notifyCheckpointAborted(long checkpointId) throws Exception {
            inner.notifyCheckpointAborted(checkpointId);
        }

        @Override
        public void close() throws Exception {
            inner.close();
        }
    }

    static final class Enumerator<S extends SourceSplit, E> implements SplitEnumerator<S, E> {
        private final SplitEnumerator<S, E> inner;
        private final SplitEnumeratorContext<S> context;
        private final Set<Integer> ended = new HashSet<>();

        Enumerator(SplitEnumerator<S, E> inner, SplitEnumeratorContext<S> context) {
            this.inner = inner;
            this.context = context;
        }

        @Override
        public void start() {
            inner.start();
        }

        @Override
        public void handleSplitRequest(int subtaskId, @Nullable String requesterHostname) {
            inner.handleSplitRequest(subtaskId, requesterHostname);
        }

        @Override
        public void addSplitsBack(List<S> splits, int subtaskId) {
            ended.remove(subtaskId); // its reader starts again, with these splits
            inner.addSplitsBack(splits, subtaskId);
        }

        @Override
        public void addReader(int subtaskId) {
            ended.remove(subtaskId);
            inner.addReader(subtaskId);
        }

        @Override
        public void handleSourceEvent(int subtaskId, SourceEvent event) {
            if (!(event instanceof Ended)) {
                inner.handleSourceEvent(subtaskId, event);
                return;
            }
            ended.add(subtaskId);
            if (ended.size() >= context.currentParallelism()) {
                for (int reader : context.registeredReaders().keySet()) {
                    context.sendEventToSourceReader(reader, new AllEnded());
                }
            }
        }

        @Override
        public E snapshotState(long checkpointId) throws Exception {
            return inner.snapshotState(checkpointId);
        }

        @Override
        public void notifyCheckpointComplete(long checkpointId) throws Exception {
            inner.notifyCheckpointComplete(checkpointId);
        }

        @Override
        public void notifyCheckpointAborted(long checkpointId) throws Exception {
            inner.notifyCheckpointAborted(checkpointId);
        }

        @Override
        public void close() throws java.io.IOException {
            inner.close();
        }
    }
}
