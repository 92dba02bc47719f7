package org.fedp2eft.sample

import android.os.Bundle
import android.system.Os
import android.widget.Button
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.TextView
import androidx.activity.ComponentActivity
import androidx.lifecycle.lifecycleScope
import java.io.File
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.CoroutineStart
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import org.fedp2eft.FedException
import org.fedp2eft.Report
import org.fedp2eft.android.CoroutinePersonalizer
import org.fedp2eft.emojiBenchmarkClient

/**
 * Personalizes the base model on the emoji client seen-hi-0 at budget r = 4. Expects, pushed with
 * adb into this app's external files folder (docs/mobile.md): `bases/e5-emoji/` (from
 * `fedp2eft train-base`), `data/emojibase-data/` (from `fedp2eft fetch`) and, optionally, a PSG
 * `psg.safetensors`. A real app would hold the personalizer in a ViewModel.
 */
class MainActivity : ComponentActivity() {
    private lateinit var status: TextView
    private lateinit var start: Button
    private lateinit var cancel: Button
    private var run: Job? = null

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        status = TextView(this).apply { setPadding(32, 32, 32, 32) }
        start = Button(this).apply { text = "Personalize (r = 4)" }
        cancel = Button(this).apply { text = "Cancel"; isEnabled = false }
        setContentView(LinearLayout(this).apply {
            orientation = LinearLayout.VERTICAL
            addView(start)
            addView(cancel)
            addView(ScrollView(context).apply { addView(status) })
        })

        val home = getExternalFilesDir(null) ?: filesDir
        // emojiBenchmarkClient reads the benchmark from $FEDP2EFT_HOME/data.
        Os.setenv("FEDP2EFT_HOME", home.path, true)
        start.setOnClickListener { run = lifecycleScope.launch { personalize(home) } }
        cancel.setOnClickListener { run?.cancel() }
    }

    private suspend fun personalize(home: File) {
        start.isEnabled = false
        cancel.isEnabled = true
        try {
            status.text = "Loading the model and the examples…"
            val client = withContext(Dispatchers.IO) { emojiBenchmarkClient("seen-hi-0") }
            val psg = File(home, "psg.safetensors").takeIf { it.isFile }?.path
            CoroutinePersonalizer.open(File(home, "bases/e5-emoji").path, psg).use { p ->
                p.personalizer.setExamples(client.train, client.test)
                val ticks = lifecycleScope.launch(start = CoroutineStart.UNDISPATCHED) {
                    p.progress.collect { t ->
                        val loss = t.loss?.let { " loss %.3f".format(it) } ?: ""
                        status.text = "${t.stage} ${t.phase} ${t.done}/${t.total}$loss"
                    }
                }
                try {
                    status.text = describe(p.personalize(4))
                } finally {
                    ticks.cancel()
                }
            }
        } catch (e: FedException) {
            status.text = "Failed: ${e.message}"
        } catch (e: CancellationException) {
            status.text = "Cancelled."
            throw e
        } finally {
            start.isEnabled = true
            cancel.isEnabled = false
        }
    }

    private fun describe(r: Report) = buildString {
        appendLine("Budget r = ${r.budget} (r_max ${r.rMax}): ${r.totalRank} ranks over ${r.ranks.size} layers")
        appendLine(
            "Accuracy %.1f %% → %.1f %% on %d held-out examples".format(
                100 * r.accuracyBefore, 100 * r.accuracyAfter, r.testExamples.toInt(),
            ),
        )
        appendLine("${r.trainSteps} steps in %.1f s".format(r.seconds))
        r.ranks.forEach { appendLine("  ${it.name}: ${it.rank}") }
    }
}
