/* Elasticsearch 8.x entry point: Processor.Factory.create has no ProjectId yet. */
package org.bridge.elasticsearch;

import org.elasticsearch.ingest.Processor;

import java.util.Map;

public final class BridgePlugin extends BridgePluginBase {
    @Override
    public Map<String, Processor.Factory> getProcessors(Processor.Parameters parameters) {
        EmbeddingBatcher.Scheduler scheduler = scheduler(parameters);
        Processor.Factory factory = (Map<String, Processor.Factory> factories, String tag, String description,
            Map<String, Object> config) -> EmbeddingProcessor.create(tag, description, config, scheduler);
        return Map.of(EmbeddingProcessor.TYPE, factory);
    }
}
