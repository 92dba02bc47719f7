// The Kotlin binding of fedp2eft-ffi on the JVM (JNA + the Linux library), mirroring
// ffi/tests/python/test_personalizer.py: a real model (all-MiniLM-L6-v2) personalised on a real
// client of the emoji benchmark, progress callbacks, cancellation (from the listener and from
// another thread) and the typed errors. Run by scripts/ffi-kotlin-test.sh, which generates the
// binding and sets jna.library.path, FEDP2EFT_HOME and FEDP2EFT_MINILM through the pom.
//
// Names as UniFFI's Kotlin generator writes them: the Rust `FedError` is `FedException` (an
// `Error` suffix becomes `Exception`), its variants nested classes (`FedException.Cancelled`);
// u32/u64 are UInt/ULong; `Personalizer::new` is the Kotlin constructor, `from_pretrained` a
// companion function; a callback interface is a plain Kotlin interface to implement. The error
// variants carry their text in `detail` (ffi/src/error.rs: a field called `message` would clash
// with Throwable.message and the binding would not compile).
package org.fedp2eft

import java.io.File
import java.nio.file.Path
import java.util.Collections
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.AfterEach
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.BeforeAll
import org.junit.jupiter.api.BeforeEach
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.TestInstance
import org.junit.jupiter.api.assertThrows
import org.junit.jupiter.api.io.TempDir

// One instance for the class, so that the benchmark client is loaded once (@BeforeAll).
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class PersonalizerTest {
    private val minilm: String = System.getenv("FEDP2EFT_MINILM")
        ?: error("FEDP2EFT_MINILM is not set: run scripts/ffi-kotlin-test.sh")
    private val fast = PersonalizeOptions(epochs = 1u, batchSize = 16u, learningRate = 1e-3, outDir = null)

    private lateinit var client: LocalData
    private lateinit var p: Personalizer

    /** Records every tick (and the thread it came on); optionally cancels at a stage. */
    private class Recorder(val cancelOn: String? = null, val personalizer: Personalizer? = null) :
        ProgressListener {
        val events: MutableList<Progress> = Collections.synchronizedList(mutableListOf())
        val threads: MutableSet<Thread> = Collections.synchronizedSet(mutableSetOf())

        override fun onProgress(progress: Progress) {
            events += progress
            threads += Thread.currentThread()
            if (cancelOn != null && progress.stage == cancelOn) personalizer!!.cancel()
        }
    }

    @BeforeAll
    fun loadClient() {
        client = emojiBenchmarkClient("seen-en-0")
        assertEquals("en", client.language)
        assertTrue(client.train.isNotEmpty() && client.test.isNotEmpty())
    }

    @BeforeEach
    fun newPersonalizer() {
        p = Personalizer.fromPretrained(minilm, 8u, 42uL)
        p.setExamples(client.train, client.test)
    }

    // The native object is freed by a Cleaner anyway; closing it makes that deterministic.
    @AfterEach
    fun close() = p.close()

    @Test
    fun personalizeReportsRanksAccuracyAndProgress(@TempDir tmp: Path) {
        val rec = Recorder()
        val report = p.personalize(2u, fast.copy(outDir = tmp.toString()), rec)
        val layers = p.numLayers()
        assertEquals(38u, layers)
        assertEquals(layers.toInt(), report.ranks.size)
        assertEquals(2u * layers, report.totalRank)
        assertEquals(report.totalRank, report.ranks.sumOf { it.rank })
        assertTrue(report.accuracyBefore in 0.0..1.0, "accuracyBefore ${report.accuracyBefore}")
        assertTrue(report.accuracyAfter in 0.0..1.0, "accuracyAfter ${report.accuracyAfter}")
        assertEquals(client.test.size.toUInt(), report.testExamples)
        assertTrue(report.trainSteps >= 1u && report.seconds > 0.0)

        assertTrue(rec.events.isNotEmpty())
        assertTrue(rec.events.all { it.done <= it.total }, "done > total in ${rec.events}")
        val stages = rec.events.map { it.stage }.toSet()
        assertTrue(stages.containsAll(setOf("train", "evaluate")), "stages seen: $stages")
        val train = rec.events.filter { it.stage == "train" }
        assertEquals(train.last().total, train.last().done)
        assertTrue(train.all { it.loss != null })
        // Callbacks arrive on the calling thread.
        assertEquals(setOf(Thread.currentThread()), rec.threads)
        assertTrue(File(report.mergedDir!!, "model.safetensors").isFile)
        assertTrue(File(report.adapterDir!!, "adapter_config.json").isFile)
    }

    @Test
    fun cancelFromTheListenerStopsTheRun() {
        val rec = Recorder(cancelOn = "train", personalizer = p)
        assertThrows<FedException.Cancelled> { p.personalize(2u, fast, rec) }
        assertEquals(1, rec.events.count { it.stage == "train" }, "the run went on after cancel()")
        // The personalizer is usable again afterwards (each run takes a fresh cancel token).
        val report = p.personalize(1u, fast, null)
        assertEquals(p.numLayers(), report.totalRank)
    }

    @Test
    fun cancelFromAnotherThread() = runBlocking {
        // personalize() blocks, so it runs on an IO worker; cancel() comes from this thread once
        // the run has started (a cancel() before personalize() starts is replaced by its token).
        val started = CompletableDeferred<Unit>()
        val listener = object : ProgressListener {
            override fun onProgress(progress: Progress) {
                started.complete(Unit)
            }
        }
        val run = async(Dispatchers.IO) {
            runCatching { p.personalize(2u, fast.copy(epochs = 50u), listener) }
        }
        withTimeout(60_000) { started.await() }
        p.cancel()
        val result = withTimeout(60_000) { run.await() }
        assertTrue(result.exceptionOrNull() is FedException.Cancelled, "got $result")
    }

    @Test
    fun typedErrors() {
        val zero = assertThrows<FedException.InvalidBudget> { p.personalize(0u, fast, null) }
        assertEquals(0u, zero.budget)
        assertTrue(zero.rMax >= 1u, "rMax ${zero.rMax}")
        val big = assertThrows<FedException.InvalidBudget> { p.personalize(10_000u, fast, null) }
        assertEquals(10_000u, big.budget)
        assertTrue(big.rMax < 10_000u, "rMax ${big.rMax}")

        // Both constructors: `new` (the primary constructor) and `from_pretrained`.
        assertThrows<FedException.Model> { Personalizer("/nonexistent/base", null) }
        assertThrows<FedException.Model> { Personalizer.fromPretrained("/nonexistent/model.e5s1", 8u, 0uL) }

        val label = assertThrows<FedException.Data> {
            p.setExamples(listOf(Example(text = "x", label = 99u)), client.test)
        }
        assertTrue("99" in label.detail, label.detail)
        Personalizer.fromPretrained(minilm, 8u, 1uL).use { fresh ->
            assertThrows<FedException.Data> { fresh.personalize(2u, fast, null) }
        }
        assertThrows<FedException.Data> { emojiBenchmarkClient("no-such-client") }
        val method = assertThrows<FedException.InvalidOption> {
            p.personalize(2u, fast.copy(method = "lora2"), null)
        }
        assertTrue("bt-lora" in method.detail, method.detail)
    }
}
