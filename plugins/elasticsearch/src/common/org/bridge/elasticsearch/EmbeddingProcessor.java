/* The `bridge_embedding` ingest processor: shared by the 8.x and 9.x plugin classes. */
package org.bridge.elasticsearch;

import org.elasticsearch.ingest.AbstractProcessor;
import org.elasticsearch.ingest.ConfigurationUtils;
import org.elasticsearch.ingest.IngestDocument;

import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.function.BiConsumer;

/**
 * Embeds the joined source fields of a document and stores the vector in the target field.
 *
 * The text is built exactly as bridge-side ingest builds it (bridge/index/ingest.py
 * {@code _joined_text}): the non-empty string fields in order, duplicates removed, joined by
 * "\n"; so a document's vector does not depend on the ingest mode. The request itself is
 * sent by an {@link EmbeddingBatcher} that gathers a bulk's documents into one call.
 */
public final class EmbeddingProcessor extends AbstractProcessor {
    public static final String TYPE = "bridge_embedding";

    private final List<String> sourceFields;
    private final String targetField;
    private final boolean ignoreMissing;
    private final EmbeddingBatcher batcher;

    EmbeddingProcessor(
        String tag, String description, List<String> sourceFields, String targetField,
        boolean ignoreMissing, EmbeddingBatcher batcher
    ) {
        super(tag, description);
        this.sourceFields = sourceFields;
        this.targetField = targetField;
        this.ignoreMissing = ignoreMissing;
        this.batcher = batcher;
    }

    @Override
    public String getType() {
        return TYPE;
    }

    @Override
    public boolean isAsync() {
        return true;
    }

    @Override
    public void execute(IngestDocument document, BiConsumer<IngestDocument, Exception> handler) {
        String text = joinedText(document);
        if (text.isEmpty()) {
            if (ignoreMissing) {
                handler.accept(document, null);
            } else {
                handler.accept(null, new IllegalArgumentException(
                    "none of the fields " + sourceFields + " holds text to embed; "
                        + "add one, or set ignore_missing: true to index such documents without a vector"));
            }
            return;
        }
        batcher.submit(text, (vector, failure) -> {
            if (failure != null) {
                handler.accept(null, failure);  // the item fails: never indexed without its vector
                return;
            }
            document.setFieldValue(targetField, vector);
            handler.accept(document, null);
        });
    }

    private String joinedText(IngestDocument document) {
        LinkedHashSet<String> parts = new LinkedHashSet<>();
        for (String field : sourceFields) {
            if (document.hasField(field)) {
                Object value = document.getFieldValue(field, Object.class);
                if (value instanceof String s && s.isEmpty() == false) {
                    parts.add(s);
                }
            }
        }
        return String.join("\n", parts);
    }

    /** Reads the processor options; the version-specific factories delegate here. */
    public static EmbeddingProcessor create(
        String tag, String description, Map<String, Object> config, EmbeddingBatcher.Scheduler scheduler
    ) {
        List<String> urls = ConfigurationUtils.readOptionalListOrString(TYPE, tag, config, "url");
        if (urls == null || urls.isEmpty()) {
            throw ConfigurationUtils.newConfigurationException(TYPE, tag, "url",
                "is required: the bridge's base URL, e.g. http://127.0.0.1:8000 (a list for fail-over)");
        }
        List<String> fields = ConfigurationUtils.readOptionalListOrString(TYPE, tag, config, "field");
        if (fields == null || fields.isEmpty()) {
            fields = List.of("title", "text");
        }
        String target = ConfigurationUtils.readStringProperty(TYPE, tag, config, "target_field", "embedding");
        String model = ConfigurationUtils.readOptionalStringProperty(TYPE, tag, config, "model");
        String inputType = ConfigurationUtils.readStringProperty(TYPE, tag, config, "input_type", "document");
        Integer dimensions = ConfigurationUtils.readIntProperty(TYPE, tag, config, "dimensions", null);
        int batchSize = positive(tag, "batch_size", ConfigurationUtils.readIntProperty(TYPE, tag, config, "batch_size", 64));
        int lingerMs = ConfigurationUtils.readIntProperty(TYPE, tag, config, "linger_ms", 5);
        int timeoutMs = positive(tag, "timeout_ms", ConfigurationUtils.readIntProperty(TYPE, tag, config, "timeout_ms", 30000));
        int maxInFlight = positive(tag, "max_in_flight", ConfigurationUtils.readIntProperty(TYPE, tag, config, "max_in_flight", 8));
        boolean ignoreMissing = ConfigurationUtils.readBooleanProperty(TYPE, tag, config, "ignore_missing", false);
        if (lingerMs < 0) {
            throw ConfigurationUtils.newConfigurationException(TYPE, tag, "linger_ms", "must be 0 or more");
        }
        EmbeddingBatcher batcher = new EmbeddingBatcher(
            new ArrayList<>(urls), model, inputType, dimensions, batchSize, lingerMs, timeoutMs, maxInFlight, scheduler);
        return new EmbeddingProcessor(tag, description, List.copyOf(fields), target, ignoreMissing, batcher);
    }

    private static int positive(String tag, String name, int value) {
        if (value < 1) {
            throw ConfigurationUtils.newConfigurationException(TYPE, tag, name, "must be 1 or more, got " + value);
        }
        return value;
    }
}
