// Coroutine front of the generated binding (org.fedp2eft, written by scripts/build-android.sh into
// src/generated/kotlin). Plain Kotlin + kotlinx-coroutines-core, no android.* API: CI compiles
// this file on the JVM together with the generated binding (ffi/tests/kotlin/pom.xml).
package org.fedp2eft.android

import java.util.concurrent.atomic.AtomicBoolean
import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.awaitCancellation
import kotlinx.coroutines.channels.BufferOverflow
import kotlinx.coroutines.coroutineScope
import kotlinx.coroutines.ensureActive
import kotlinx.coroutines.flow.MutableSharedFlow
import kotlinx.coroutines.flow.SharedFlow
import kotlinx.coroutines.flow.asSharedFlow
import kotlinx.coroutines.launch
import kotlinx.coroutines.sync.Mutex
import kotlinx.coroutines.sync.withLock
import kotlinx.coroutines.withContext
import org.fedp2eft.FedException
import org.fedp2eft.FederatedRun
import org.fedp2eft.PersonalizeOptions
import org.fedp2eft.Personalizer
import org.fedp2eft.Progress
import org.fedp2eft.ProgressListener
import org.fedp2eft.Report
import org.fedp2eft.RoundReport

/**
 * Suspending front of [Personalizer], whose calls block for seconds to minutes.
 *
 * - Each call runs on [dispatcher] (default [Dispatchers.IO]) and returns only once the native
 *   call has returned, so nothing of it keeps running after the coroutine ends.
 * - Cancelling the calling coroutine (e.g. leaving a `lifecycleScope`) calls
 *   [Personalizer.cancel]: the native run stops at its next step and the coroutine ends with a
 *   `CancellationException`. [cancel] stops the running call with `FedException.Cancelled`.
 * - Calls are serialised, one native run at a time, so a cancellation reaches its own run.
 * - [progress] emits the ticks of the running call; emitting never blocks the native worker
 *   (a slow collector loses the oldest ticks).
 */
class CoroutinePersonalizer(
    val personalizer: Personalizer,
    private val dispatcher: CoroutineDispatcher = Dispatchers.IO,
) : AutoCloseable {
    private val mutex = Mutex()
    private val ticks = MutableSharedFlow<Progress>(
        extraBufferCapacity = 64,
        onBufferOverflow = BufferOverflow.DROP_OLDEST,
    )

    /** Progress of the running call; collect it before starting the call. */
    val progress: SharedFlow<Progress> = ticks.asSharedFlow()

    /** Personalises with an average of [budget] ranks per layer (see `Personalizer.personalize`). */
    suspend fun personalize(budget: Int, options: PersonalizeOptions = PersonalizeOptions()): Report {
        require(budget >= 0) { "budget must not be negative: $budget" }
        return blocking { listener -> personalizer.personalize(budget.toUInt(), options, listener) }
    }

    // --- join_round (federated rounds): one round of `run` per call, see Personalizer.joinRound.
    suspend fun joinRound(run: FederatedRun, token: String): RoundReport =
        blocking { listener -> personalizer.joinRound(run, token, listener) }
    // --- end join_round

    /** Stops the running call at its next step; it then fails with `FedException.Cancelled`. */
    fun cancel() = personalizer.cancel()

    override fun close() = personalizer.close()

    private suspend fun <T> blocking(call: (ProgressListener) -> T): T = mutex.withLock {
        coroutineScope {
            val cancelled = AtomicBoolean(false)
            val listener = object : ProgressListener {
                override fun onProgress(progress: Progress) {
                    // The native call installs a fresh cancel token when it starts: repeat a
                    // cancel() that came before that at the first tick.
                    if (cancelled.get()) personalizer.cancel()
                    ticks.tryEmit(progress)
                }
            }
            val finished = AtomicBoolean(false)
            val watcher = launch(start = CoroutineStart.UNDISPATCHED) {
                try {
                    awaitCancellation()
                } finally {
                    if (!finished.get()) {
                        cancelled.set(true)
                        personalizer.cancel()
                    }
                }
            }
            try {
                withContext(dispatcher) {
                    try {
                        call(listener)
                    } catch (e: FedException.Cancelled) {
                        ensureActive() // our own cancellation: end as a CancellationException
                        throw e
                    }
                }
            } finally {
                finished.set(true)
                watcher.cancel()
            }
        }
    }

    companion object {
        /** Loads a base model saved by `fedp2eft train-base` (and a PSG) off the calling thread. */
        suspend fun open(
            baseDir: String,
            psgPath: String? = null,
            dispatcher: CoroutineDispatcher = Dispatchers.IO,
        ): CoroutinePersonalizer =
            withContext(dispatcher) { CoroutinePersonalizer(Personalizer(baseDir, psgPath), dispatcher) }
    }
}
