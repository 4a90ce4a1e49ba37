/* What the 8.x and 9.x plugin classes share: the keystore setting and ES's scheduler. */
package org.bridge.elasticsearch;

import org.elasticsearch.common.settings.Setting;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.ingest.Processor;
import org.elasticsearch.plugins.IngestPlugin;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.ReloadablePlugin;

import java.util.List;

/** Registers {@code bridge.api_key} and reloads it on {@code _nodes/reload_secure_settings}. */
public abstract class BridgePluginBase extends Plugin implements IngestPlugin, ReloadablePlugin {
    @Override
    public List<Setting<?>> getSettings() {
        return List.of(ApiKey.SETTING);
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
        };
    }
}
