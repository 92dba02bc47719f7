// Async front of the generated binding (Generated/FedP2EFT.swift, written by scripts/build-ios.sh).
// Every Personalizer call blocks for seconds to minutes; these run it on a thread of their own,
// off Swift's cooperative pool, and map task cancellation onto Personalizer.cancel().
import Foundation

extension Personalizer {
    /// `personalize(budget:options:listener:)` without blocking the caller. `progress` is called
    /// on the worker thread, between steps. Cancelling the task stops the run at its next step
    /// and throws `CancellationError`; `cancel()` throws `FedError.Cancelled`. Returns only once
    /// the native call has returned. Run one call at a time per personalizer.
    public func personalize(
        budget: UInt32,
        options: PersonalizeOptions = PersonalizeOptions(),
        progress: (@Sendable (Progress) -> Void)? = nil
    ) async throws -> Report {
        try await runOffPool(progress) { listener in
            try self.personalize(budget: budget, options: options, listener: listener)
        }
    }

    // MARK: join_round (federated rounds): one round of `run` per call, see joinRound(run:token:listener:).

    public func joinRound(
        run: FederatedRun,
        token: String,
        progress: (@Sendable (Progress) -> Void)? = nil
    ) async throws -> RoundReport {
        try await runOffPool(progress) { listener in
            try self.joinRound(run: run, token: token, listener: listener)
        }
    }

    // MARK: end join_round

    private func runOffPool<T: Sendable>(
        _ progress: (@Sendable (Progress) -> Void)?,
        _ call: @escaping @Sendable (ProgressListener) throws -> T
    ) async throws -> T {
        try Task.checkCancellation()
        let listener = CancellingListener(self, forward: progress)
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    let thread = Thread { continuation.resume(with: Result { try call(listener) }) }
                    // GCD workers have 512 KiB of stack; give the model code what Rust's own
                    // threads get and more.
                    thread.stackSize = 4 << 20
                    thread.start()
                }
            } onCancel: {
                listener.cancel()
            }
        } catch FedError.Cancelled where Task.isCancelled {
            throw CancellationError()
        }
    }
}

/// Forwards ticks and repeats a task's cancel() at the next tick: the native call installs a
/// fresh cancel token when it starts, so a cancel() that came just before would be lost.
private final class CancellingListener: ProgressListener, @unchecked Sendable {
    private let personalizer: Personalizer
    private let forward: (@Sendable (Progress) -> Void)?
    private let lock = NSLock()
    private var cancelled = false

    init(_ personalizer: Personalizer, forward: (@Sendable (Progress) -> Void)?) {
        self.personalizer = personalizer
        self.forward = forward
    }

    func cancel() {
        lock.lock()
        cancelled = true
        lock.unlock()
        personalizer.cancel()
    }

    func onProgress(progress: Progress) {
        lock.lock()
        let again = cancelled
        lock.unlock()
        if again { personalizer.cancel() }
        forward?(progress)
    }
}
