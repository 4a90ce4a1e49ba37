/* The `bridge_embedding` ingest processor: shared by the 8.x and 9.x plugin classes. */
package org.bridge.elasticsearch;

import org.elasticsearch.ingest.AbstractProcessor;
import org.elasticsearch.ingest.ConfigurationUtils;
import org.elasticsearch.ingest.IngestDocument;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.function.BiConsumer;

/**
 * Sends a document's body ({@code field}) and title ({@code title_field}) to the bridge and
 * stores what comes back in the target field: with {@code passage_tokens} > 0 the list of
 * passages ({@code start}, {@code end}, {@code embedding}) the bridge split the body into,
 * else one vector. The bridge joins title and body and splits with the model's own
 * tokenizer, exactly as for bridge-side ingest, so a document's vectors do not depend on
 * the ingest mode. Requests are sent by an {@link EmbeddingBatcher} that gathers a bulk's
 * documents into one call.
 */
public final class EmbeddingProcessor extends AbstractProcessor {
    public static final String TYPE = "bridge_embedding";

    private final String textField;
    private final String titleField;
    private final String targetField;
    private final boolean ignoreMissing;
    private final EmbeddingBatcher batcher;

    EmbeddingProcessor(
        String tag, String description, String textField, String titleField, String targetField,
        boolean ignoreMissing, EmbeddingBatcher batcher
    ) {
        super(tag, description);
        this.textField = textField;
        this.titleField = titleField;
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
        String text = text(document, textField);
        if (text == null || text.isBlank()) {
            if (ignoreMissing) {
                handler.accept(document, null);
            } else {
                handler.accept(null, new IllegalArgumentException(
                    "field [" + textField + "] holds no text to embed; "
                        + "add it, or set ignore_missing: true to index such documents without vectors"));
            }
            return;
        }
        String title = titleField == null ? null : text(document, titleField);
        batcher.submit(title, text, (vectors, failure) -> {
            if (failure != null) {
                handler.accept(null, failure);  // the item fails: never indexed without its vectors
                return;
            }
            document.setFieldValue(targetField, vectors);
            handler.accept(document, null);
        });
    }

    /** The field's string value; null when it is missing, empty or not a string. */
    private static String text(IngestDocument document, String field) {
        if (document.hasField(field) == false) {
            return null;
        }
        Object value = document.getFieldValue(field, Object.class);
        return value instanceof String s && s.isEmpty() == false ? s : null;
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
        String field = ConfigurationUtils.readStringProperty(TYPE, tag, config, "field", "text");
        String titleField = ConfigurationUtils.readOptionalStringProperty(TYPE, tag, config, "title_field");
        if (titleField != null && titleField.isEmpty()) {
            titleField = null;
        }
        int passageTokens = ConfigurationUtils.readIntProperty(TYPE, tag, config, "passage_tokens", 0);
        int passageOverlap = ConfigurationUtils.readIntProperty(TYPE, tag, config, "passage_overlap", 0);
        if (passageTokens < 0 || passageOverlap < 0) {
            throw ConfigurationUtils.newConfigurationException(TYPE, tag, "passage_tokens",
                "passage_tokens and passage_overlap must be 0 or more");
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
            new ArrayList<>(urls), model, inputType, dimensions, passageTokens, passageOverlap,
            batchSize, lingerMs, timeoutMs, maxInFlight, scheduler);
        return new EmbeddingProcessor(tag, description, field, titleField, target, ignoreMissing, batcher);
    }

    private static int positive(String tag, String name, int value) {
        if (value < 1) {
            throw ConfigurationUtils.newConfigurationException(TYPE, tag, name, "must be 1 or more, got " + value);
        }
        return value;
    }
}
