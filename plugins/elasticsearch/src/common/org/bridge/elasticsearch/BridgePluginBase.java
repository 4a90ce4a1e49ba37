/* What the 8.x and 9.x plugin classes share: the keystore setting and ES's scheduler. */
package org.bridge.elasticsearch;

import org.elasticsearch.cluster.service.ClusterService;
import org.elasticsearch.common.settings.Setting;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.common.util.concurrent.ThreadContext;
import org.elasticsearch.ingest.Processor;
import org.elasticsearch.plugins.ActionPlugin;
import org.elasticsearch.plugins.IngestPlugin;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.ReloadablePlugin;
import org.elasticsearch.rest.RestHandler;

import java.util.Collection;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Supplier;

/** Registers {@code bridge.api_key} and reloads it on {@code _nodes/reload_secure_settings}. */
public abstract class BridgePluginBase extends Plugin implements ActionPlugin, IngestPlugin, ReloadablePlugin {
    private final AtomicReference<ClusterService> clusterService = new AtomicReference<>();

    @Override
    public List<Setting<?>> getSettings() {
        return List.of(ApiKey.SETTING, RootHandler.ENABLED);
    }

    @Override
    public Collection<?> createComponents(PluginServices services) {
        clusterService.set(services.clusterService());
        return List.of();
    }

    /** The GET / handler when {@code bridge.root_handler} is on, else nothing. */
    protected List<RestHandler> rootHandler(Settings settings) {
        return RootHandler.ENABLED.get(settings) ? List.of(new RootHandler(clusterService::get)) : List.of();
    }

    @Override
    public void reload(Settings settings) {
        ApiKey.load(settings);
    }

    /** Timers and callbacks on Elasticsearch's thread pool: the plugin starts no threads. */
    protected static EmbeddingBatcher.Scheduler scheduler(Processor.Parameters parameters) {
        ApiKey.load(parameters.env.settings());  // the keystore is still open while processors register
        return new EmbeddingBatcher.Scheduler() {
            @Override
            public void schedule(long delayMs, Runnable task) {
                parameters.scheduler.apply(delayMs, task);
            }

            @Override
            public void execute(Runnable task) {
                parameters.genericExecutor.accept(task);
            }

            @Override
            public Supplier<ThreadContext.StoredContext> captureContext() {
                return parameters.threadContext.newRestorableContext(false);
            }
        };
    }
}
