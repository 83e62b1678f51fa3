import ArgumentParser
import Reconcilers
import YAML

extension AgentConfig {
    /// For commands: loads, or prints every problem at FILE:LINE:COL and exits 1.
    static func loadForCommand(path: String) throws -> AgentConfig {
        do {
            return try load(path: path)
        } catch {
            for d in error.diagnostics { Terminal.error(d.description) }
            throw ExitCode.failure
        }
    }
}
