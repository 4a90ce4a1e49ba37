/* Elasticsearch 9.x entry point: Processor.Factory.create takes a trailing ProjectId. */
package org.bridge.elasticsearch;

import org.elasticsearch.cluster.metadata.ProjectId;
import org.elasticsearch.cluster.node.DiscoveryNodes;
import org.elasticsearch.features.NodeFeature;
import org.elasticsearch.ingest.Processor;
import org.elasticsearch.rest.RestHandler;

import java.util.Collection;
import java.util.Map;
import java.util.function.Predicate;
import java.util.function.Supplier;

public final class BridgePlugin extends BridgePluginBase {
    @Override
    public Collection<RestHandler> getRestHandlers(
        RestHandlersServices services, Supplier<DiscoveryNodes> nodes, Predicate<NodeFeature> features
    ) {
        return rootHandler(services.settings());
    }

    @Override
    public Map<String, Processor.Factory> getProcessors(Processor.Parameters parameters) {
        EmbeddingBatcher.Scheduler scheduler = scheduler(parameters);
        Processor.Factory factory = (Map<String, Processor.Factory> factories, String tag, String description,
            Map<String, Object> config, ProjectId projectId) -> EmbeddingProcessor.create(tag, description, config, scheduler);
        return Map.of(EmbeddingProcessor.TYPE, factory);
    }
}
