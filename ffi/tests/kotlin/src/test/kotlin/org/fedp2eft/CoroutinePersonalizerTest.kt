// The Android module's coroutine wrapper (android/fedp2eft/src/main/kotlin, compiled into this
// JVM build by the pom) against the Linux library: progress as a flow, a report from a suspend
// call, and coroutine cancellation mapped onto Personalizer.cancel() — the native run stops
// and the personalizer is usable again.
package org.fedp2eft

import java.util.Collections
import kotlin.time.Duration.Companion.seconds
import kotlin.time.TimeSource
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.ExperimentalCoroutinesApi
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.async
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.fedp2eft.android.CoroutinePersonalizer
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test

class CoroutinePersonalizerTest {
    private val minilm: String = System.getenv("FEDP2EFT_MINILM")
        ?: error("FEDP2EFT_MINILM is not set: run scripts/ffi-kotlin-test.sh")
    private val fast = PersonalizeOptions(epochs = 1u, batchSize = 16u, learningRate = 1e-3, outDir = null)

    private fun open(): CoroutinePersonalizer {
        val client = emojiBenchmarkClient("seen-en-0")
        val p = Personalizer.fromPretrained(minilm, 8u, 42uL)
        p.setExamples(client.train, client.test)
        return CoroutinePersonalizer(p)
    }

    @Test
    fun suspendPersonalizeWithProgressFlow() = runBlocking {
        open().use { cp ->
            val ticks = Collections.synchronizedList(mutableListOf<Progress>())
            val collector = launch(start = CoroutineStart.UNDISPATCHED) { cp.progress.collect { ticks += it } }
            val report = cp.personalize(2, fast)
            collector.cancelAndJoin()
            assertEquals(2u * cp.personalizer.numLayers(), report.totalRank)
            assertTrue(ticks.any { it.stage == "train" }, "ticks: $ticks")
        }
    }

    @OptIn(ExperimentalCoroutinesApi::class) // getCompletionExceptionOrNull
    @Test
    fun cancellingTheCoroutineStopsTheNativeRun() = runBlocking {
        open().use { cp ->
            val run = async { cp.personalize(2, fast.copy(epochs = 50u)) }
            withTimeout(60_000) { cp.progress.first { it.stage == "train" } }
            val mark = TimeSource.Monotonic.markNow()
            run.cancel()
            withTimeout(60_000) { run.join() }
            // The wrapper returns only once the native call has, so this bounds the native run.
            assertTrue(mark.elapsedNow() < 30.seconds, "the native run went on for ${mark.elapsedNow()}")
            assertTrue(run.isCancelled)
            assertTrue(run.getCompletionExceptionOrNull() is CancellationException)
            assertEquals(cp.personalizer.numLayers(), cp.personalize(1, fast).totalRank)
        }
    }
}
