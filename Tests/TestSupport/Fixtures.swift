import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The repository's test fixtures and example, found from this file's location.
public enum Fixtures {
    public static let repository: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    public static let desiredState = repository + "/Tests/Fixtures/desired-state"
    public static let example = repository + "/examples/platform.yaml"

    public struct Expectation: Sendable, CustomStringConvertible {
        public var file: String
        public var line: Int
        public var column: Int
        public var code: String
        public var path: String
        public var message: String
        public var description: String { file }
    }

    /// The invalid corpus with the diagnostic each file must produce first.
    public static let invalid: [Expectation] = {
        let table = try! String(contentsOfFile: desiredState + "/invalid/EXPECTED.tsv", encoding: .utf8)
        return table.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { row in
            let c = row.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            return Expectation(file: c[0], line: Int(c[1])!, column: Int(c[2])!, code: c[3], path: c[4], message: c[5])
        }
    }()

    public static let valid: [String] = {
        let names = try! FileManager.default.contentsOfDirectory(atPath: desiredState + "/valid").filter { $0.hasSuffix(".yaml") }.sorted()
        return names.map { desiredState + "/valid/" + $0 } + [example]
    }()

    /// A fresh directory under /tmp, removed by the caller.
    public static func temporaryDirectory() -> String {
        var template = Array("/tmp/nodeagent-test-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }
}
