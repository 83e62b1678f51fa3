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

extension Diagnostic {
    var json: JSONValue {
        .object(["file": .string(file), "line": .int(mark.line), "column": .int(mark.column),
                 "path": .string(path.description), "code": .string(code.rawValue), "message": .string(message)])
    }
}
