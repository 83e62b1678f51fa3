import Foundation
import FuzzTargets
import Testing
import TestSupport

/// Replays every fuzz seed and every input a fuzzing run ever failed on (Tests/Fuzz/regressions)
/// through the same entry points libFuzzer drives: a crash or a broken invariant stops the test
/// process, so a fixed finding stays fixed. `scripts/fuzz` does the fuzzing itself.
@Suite("Fuzz regressions")
struct FuzzRegressionTests {
    struct Case: Sendable, CustomStringConvertible {
        var target: String
        var file: String
        var description: String { "\(target): \(file.dropFirst(Fixtures.repository.count + 1))" }
    }

    static let cases: [Case] = {
        let root = Fixtures.repository
        let seeds: [String: [String]] = [
            "yaml": ["examples", "Tests/Fixtures/desired-state/valid", "Tests/Fixtures/desired-state/invalid"],
            "state": ["examples", "Tests/Fixtures/desired-state/valid", "Tests/Fixtures/desired-state/invalid"],
            "agent-config": ["examples", "Tests/Fuzz/seeds/agent-config"],
        ]
        var out: [Case] = []
        for target in FuzzTargets.all.map(\.name) {
            for dir in (seeds[target] ?? ["Tests/Fuzz/seeds/\(target)"]) + ["Tests/Fuzz/regressions/\(target)"] {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: root + "/" + dir)) ?? []
                out += names.sorted().map { Case(target: target, file: root + "/" + dir + "/" + $0) }
            }
        }
        return out
    }()

    @Test func everyTargetHasSeedsAndTheFindingsAreKept() {
        for target in FuzzTargets.all.map(\.name) {
            #expect(Self.cases.contains { $0.target == target }, "no seed for \(target)")
        }
        #expect(Self.cases.filter { $0.file.contains("/regressions/") }.count >= 7)
    }

    @Test(arguments: cases)
    func replays(_ c: Case) throws {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: c.file)))
        let target = try #require(FuzzTargets.named(c.target))
        target(bytes)
    }
}
