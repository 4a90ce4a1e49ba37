/* Gathers documents into one POST /v1/embeddings per batch, with retries and fail-over. */
package org.bridge.elasticsearch;

import org.elasticsearch.ElasticsearchStatusException;
import org.elasticsearch.common.util.concurrent.EsRejectedExecutionException;
import org.elasticsearch.common.util.concurrent.ThreadContext;
import org.elasticsearch.common.xcontent.XContentHelper;
import org.elasticsearch.rest.RestStatus;
import org.elasticsearch.xcontent.json.JsonXContent;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletionException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BiConsumer;
import java.util.function.Supplier;

/**
 * Elasticsearch runs a bulk's documents through the pipeline without waiting for async
 * processors, so documents arriving within {@code linger_ms} (or until {@code batch_size})
 * share one request. Timers and callbacks run on Elasticsearch's own thread pool (the
 * {@link Scheduler} handed in by the plugin class); the HTTP client only does the I/O.
 */
final class EmbeddingBatcher {
    /** Elasticsearch's scheduler and generic executor, as the plugin received them. */
    interface Scheduler {
        void schedule(long delayMs, Runnable task);

        void execute(Runnable task);

        /** The calling thread's context (its bulk request's response headers, its user). */
        Supplier<ThreadContext.StoredContext> captureContext();
    }

    /**
     * A document: its title (null: none), its body, where its vectors go, and the context
     * of the bulk it came from. The callback runs in that context, whichever thread
     * delivers the vectors, so the bulk response keeps its headers (X-elastic-product,
     * which clients check) and the rest of the bulk runs as its own request.
     */
    private record Item(
        String title, String text, BiConsumer<List<Object>, Exception> callback,
        Supplier<ThreadContext.StoredContext> context
    ) {
        void complete(List<Object> vector, Exception failure) {
            try (ThreadContext.StoredContext ignored = context.get()) {
                callback.accept(vector, failure);
            }
        }
    }

    private static final HttpClient HTTP = HttpClient.newBuilder()
        .version(HttpClient.Version.HTTP_1_1)  // no h2c upgrade round: the bridge speaks HTTP/1.1
        .connectTimeout(Duration.ofSeconds(5))
        .build();

    private final List<String> urls;
    private final String model;
    private final String inputType;
    private final Integer dimensions;
    private final int passageTokens;
    private final int passageOverlap;
    private final int batchSize;
    private final int lingerMs;
    private final int timeoutMs;
    private final int maxInFlight;
    private final Scheduler scheduler;

    private final Object lock = new Object();
    private List<Item> pending = new ArrayList<>();
    private boolean flushScheduled;
    private final AtomicInteger inFlight = new AtomicInteger();

    EmbeddingBatcher(
        List<String> urls, String model, String inputType, Integer dimensions, int passageTokens,
        int passageOverlap, int batchSize, int lingerMs, int timeoutMs, int maxInFlight, Scheduler scheduler
    ) {
        this.passageTokens = passageTokens;
        this.passageOverlap = passageOverlap;
        this.urls = urls.stream().map(u -> u.replaceAll("/+$", "")).toList();
        this.model = model;
        this.inputType = inputType;
        this.dimensions = dimensions;
        this.batchSize = batchSize;
        this.lingerMs = lingerMs;
        this.timeoutMs = timeoutMs;
        this.maxInFlight = maxInFlight;
        this.scheduler = scheduler;
    }

    /** Queues one document; the callback gets its vector (or passages) or the reason it has none. */
    void submit(String title, String text, BiConsumer<List<Object>, Exception> callback) {
        List<Item> full = null;
        boolean startTimer = false;
        synchronized (lock) {
            pending.add(new Item(title, text, callback, scheduler.captureContext()));
            if (pending.size() >= batchSize) {
                full = pending;
                pending = new ArrayList<>();
            } else if (flushScheduled == false) {
                flushScheduled = true;
                startTimer = true;
            }
        }
        if (full != null) {
            send(full);
        } else if (startTimer) {
            scheduler.schedule(lingerMs, this::flush);
        }
    }

    private void flush() {
        List<Item> batch;
        synchronized (lock) {
            flushScheduled = false;
            batch = pending;
            pending = new ArrayList<>();
        }
        if (batch.isEmpty() == false) {
            send(batch);
        }
    }

    private void send(List<Item> batch) {
        if (inFlight.incrementAndGet() > maxInFlight) {
            inFlight.decrementAndGet();
            // A 429-style rejection: bulk clients retry it, nothing piles up in memory.
            failAll(batch, new EsRejectedExecutionException(
                "bridge_embedding: " + maxInFlight + " requests to " + urls
                    + " are already in flight (max_in_flight); retry the bulk later"));
            return;
        }
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        attempt(batch, requestBody(batch), 0, deadline, null);
    }

    private void attempt(List<Item> batch, String body, int attempt, long deadline, String lastError) {
        String url = urls.get(attempt % urls.size()) + "/v1/embeddings";
        long remainingMs = (deadline - System.nanoTime()) / 1_000_000L;
        if (remainingMs <= 0) {
            finish(batch, new ElasticsearchStatusException(
                "bridge_embedding: no vectors within timeout_ms=" + timeoutMs + " after " + attempt
                    + " attempt(s); last: " + lastError, RestStatus.SERVICE_UNAVAILABLE));
            return;
        }
        HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(url))
            .timeout(Duration.ofMillis(remainingMs))
            .header("Content-Type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString(body));
        String key = ApiKey.current();
        if (key.isEmpty() == false) {
            request.header("Authorization", "Bearer " + key);
        }
        HTTP.sendAsync(request.build(), HttpResponse.BodyHandlers.ofString()).whenComplete(
            (response, error) -> scheduler.execute(() -> handle(batch, body, attempt, deadline, url, response, error)));
    }

    private void handle(
        List<Item> batch, String body, int attempt, long deadline, String url,
        HttpResponse<String> response, Throwable error
    ) {
        if (error != null) {
            Throwable cause = error instanceof CompletionException && error.getCause() != null ? error.getCause() : error;
            String reason = url + " unreachable: " + describe(cause);
            retry(batch, body, attempt, deadline, reason, backoffMs(attempt));
            return;
        }
        int status = response.statusCode();
        if (status == 200) {
            deliver(batch, url, response.body());
            return;
        }
        if (status == 413 && batch.size() > 1 && "too_many_passages".equals(errorField(response.body(), "code"))) {
            split(batch, deadline);
            return;
        }
        String reason = url + " answered HTTP " + status + ": " + errorMessage(response.body());
        if (status == 429 || status == 502 || status == 503 || status == 504) {
            long wait = response.headers().firstValue("Retry-After").map(EmbeddingBatcher::seconds).orElse(-1L);
            retry(batch, body, attempt, deadline, reason, wait >= 0 ? wait * 1000 : backoffMs(attempt));
            return;
        }
        RestStatus restStatus = status == 401 || status == 403 ? RestStatus.fromCode(status) : RestStatus.BAD_REQUEST;
        String hint = status == 401 ? " (set the key with `elasticsearch-keystore add bridge.api_key` and "
            + "POST _nodes/reload_secure_settings)" : "";
        finish(batch, new ElasticsearchStatusException("bridge_embedding: " + reason + hint, restStatus));
    }

    /**
     * The batch's documents make more passages than the service takes in one request
     * (max_inputs_per_request): each half is sent on its own, within the same deadline, and
     * split again if need be. A document too long alone fails alone, with the service's
     * message; its neighbours get their vectors.
     */
    private void split(List<Item> batch, long deadline) {
        int half = batch.size() / 2;
        List<Item> first = List.copyOf(batch.subList(0, half));
        List<Item> second = List.copyOf(batch.subList(half, batch.size()));
        inFlight.incrementAndGet();  // two requests now, each finishing on its own
        attempt(first, requestBody(first), 0, deadline, null);
        attempt(second, requestBody(second), 0, deadline, null);
    }

    private void retry(List<Item> batch, String body, int attempt, long deadline, String reason, long delayMs) {
        long remainingMs = (deadline - System.nanoTime()) / 1_000_000L;
        if (delayMs >= remainingMs) {
            finish(batch, new ElasticsearchStatusException(
                "bridge_embedding: gave up after " + (attempt + 1) + " attempt(s) within timeout_ms="
                    + timeoutMs + "; last: " + reason, RestStatus.SERVICE_UNAVAILABLE));
            return;
        }
        scheduler.schedule(delayMs, () -> attempt(batch, body, attempt + 1, deadline, reason));
    }

    private void deliver(List<Item> batch, String url, String body) {
        List<?> data;
        try {
            Map<String, Object> parsed = XContentHelper.convertToMap(JsonXContent.jsonXContent, body, false);
            data = (List<?>) parsed.get("data");
            if (data == null || data.size() != batch.size()) {
                throw new IllegalStateException("expected " + batch.size() + " embeddings, got "
                    + (data == null ? "none" : data.size()));
            }
        } catch (RuntimeException e) {
            finish(batch, new ElasticsearchStatusException(
                "bridge_embedding: " + url + " sent an unreadable answer: " + e.getMessage(), RestStatus.BAD_GATEWAY));
            return;
        }
        inFlight.decrementAndGet();
        for (Object entry : data) {
            Map<?, ?> embedding = (Map<?, ?>) entry;
            int index = ((Number) embedding.get("index")).intValue();
            // One vector, or the passages: [{"start", "end", "embedding"}, ...]
            @SuppressWarnings("unchecked")
            List<Object> vectors = (List<Object>) embedding.get(passageTokens > 0 ? "passages" : "embedding");
            batch.get(index).complete(vectors, null);
        }
    }

    private void finish(List<Item> batch, Exception failure) {
        inFlight.decrementAndGet();
        failAll(batch, failure);
    }

    private static void failAll(List<Item> batch, Exception failure) {
        for (Item item : batch) {
            item.complete(null, failure);
        }
    }

    private String requestBody(List<Item> batch) {
        StringBuilder json = new StringBuilder("{\"input\":[");
        for (int i = 0; i < batch.size(); i++) {
            if (i > 0) {
                json.append(',');
            }
            quote(json, batch.get(i).text());
        }
        json.append("],\"titles\":[");
        for (int i = 0; i < batch.size(); i++) {
            if (i > 0) {
                json.append(',');
            }
            String title = batch.get(i).title();
            if (title == null) {
                json.append("null");
            } else {
                quote(json, title);
            }
        }
        json.append("],\"input_type\":");
        quote(json, inputType);
        if (passageTokens > 0) {
            json.append(",\"passages\":{\"max_tokens\":").append(passageTokens)
                .append(",\"overlap\":").append(passageOverlap).append('}');
        }
        if (model != null) {
            json.append(",\"model\":");
            quote(json, model);
        }
        if (dimensions != null) {
            json.append(",\"dimensions\":").append(dimensions);
        }
        return json.append('}').toString();
    }

    private static void quote(StringBuilder json, String text) {
        json.append('"');
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            switch (c) {
                case '"' -> json.append("\\\"");
                case '\\' -> json.append("\\\\");
                case '\n' -> json.append("\\n");
                case '\r' -> json.append("\\r");
                case '\t' -> json.append("\\t");
                default -> {
                    if (c < 0x20) {
                        json.append(String.format("\\u%04x", (int) c));
                    } else {
                        json.append(c);
                    }
                }
            }
        }
        json.append('"');
    }

    private static long backoffMs(int attempt) {
        return Math.min(100L << Math.min(attempt, 5), 2000L);
    }

    private static long seconds(String retryAfter) {
        try {
            return Long.parseLong(retryAfter.trim());
        } catch (NumberFormatException e) {
            return -1L;
        }
    }

    /** A cause with a message: a bare ConnectException says nothing on its own. */
    private static String describe(Throwable cause) {
        String name = cause.getClass().getSimpleName();
        String message = cause.getMessage();
        if (message == null && cause.getCause() != null) {
            message = cause.getCause().toString();
        }
        if (cause instanceof IOException && message == null) {
            message = "connection refused or reset";
        }
        return name + (message == null ? "" : " (" + message + ")");
    }

    private static String errorMessage(String body) {
        String message = errorField(body, "message");
        if (message != null) {
            return message;
        }
        return body.length() > 200 ? body.substring(0, 200) + "..." : body;
    }

    /** A field of the service's error envelope ({"error": {"message", "code", ...}}), or null. */
    private static String errorField(String body, String name) {
        try {
            Map<String, Object> parsed = XContentHelper.convertToMap(JsonXContent.jsonXContent, body, false);
            if (parsed.get("error") instanceof Map<?, ?> error && error.get(name) != null) {
                return String.valueOf(error.get(name));
            }
        } catch (RuntimeException ignored) {
            // not JSON
        }
        return null;
    }
}
