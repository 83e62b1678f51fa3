import ArgumentParser
import Reconcilers
import YAML

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check desired-state files without touching anything.",
        discussion: """
            Prints one error per line on stderr as FILE:LINE:COL: error: FIELD: message.
            Exit status 0 when every file is valid, 1 when any is not.
            """
    )

    @Argument(help: "platform.yaml files to check.")
    var files: [String]

    @Option(name: .shortAndLong, help: "Output format: text or json.")
    var output: OutputFormat = .text

    func run() throws {
        var results: [JSONValue] = []
        var allValid = true
        for file in files {
            do throws(DiagnosticsError) {
                // An agent config is checked as one; anything else as a desired state.
                if Self.isAgentConfig(file) {
                    let agent = try AgentConfig.load(path: file)
                    if output == .text { print("\(file): OK (agent config: \(agent.source.repo) \(agent.source.ref))") }
                    results.append(.object(["file": .string(file), "valid": .bool(true), "kind": .string("AgentConfig"), "errors": .array([])]))
                    continue
                }
                let platform = try DesiredStateLoader.load(path: file)
                let sections = platform.declaredSections.sorted()
                if output == .text {
                    print("\(file): OK (\(platform.name): \(sections.isEmpty ? "no sections" : sections.joined(separator: ", ")))")
                }
                results.append(.object(["file": .string(file), "valid": .bool(true), "name": .string(platform.name.value),
                                        "sections": .array(sections.map(JSONValue.string)), "errors": .array([])]))
            } catch {
                allValid = false
                if output == .text {
                    for d in error.diagnostics { Terminal.error(d.description) }
                }
                results.append(.object(["file": .string(file), "valid": .bool(false),
                                        "errors": .array(error.diagnostics.map(\.json))]))
            }
        }
        if output == .json { print(JSONValue.array(results).jsonText) }
        if !allValid { throw ExitCode.failure }
    }
}

extension Validate {
    /// Whether the file's top-level `kind` is AgentConfig (a quick look; errors surface later).
    static func isAgentConfig(_ file: String) -> Bool {
        guard let bytes = try? FileReading.read(file), let root = try? YAMLParser().parseDocument(bytes, file: file) else { return false }
        return root["kind"]?.scalar?.text == "AgentConfig"
    }
}

extension Diagnostic {
    var json: JSONValue {
        .object(["file": .string(file), "line": .int(mark.line), "column": .int(mark.column),
                 "path": .string(path.description), "code": .string(code.rawValue), "message": .string(message)])
    }
}
