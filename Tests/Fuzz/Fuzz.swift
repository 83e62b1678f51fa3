import FuzzTargets
import YAML
#if canImport(Glibc)
import Glibc
#endif

// One executable for every target; NODEAGENT_FUZZ_TARGET picks one (scripts/fuzz sets it).
//
// Built with `-sanitize=fuzzer,address -DFUZZING`, libFuzzer's driver runs the target. SwiftPM
// links an executable with `main` renamed to `Fuzz_main`, so the driver is started from there
// (SwiftPM's renaming of an executable's entry point). Built normally, the program replays files instead:
// `Fuzz TARGET FILE...` runs each file once, which is how a crash is reproduced under a debugger.

/// Writes to standard error (fd 2: `stderr` itself is shared mutable state to Swift 6).
func complain(_ message: String) {
    var message = message
    message.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

/// The target NODEAGENT_FUZZ_TARGET names; libFuzzer runs one thread, so no lock is needed.
let selected: (@Sendable ([UInt8]) -> Void) = {
    let name = getenv("NODEAGENT_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = FuzzTargets.named(name) else {
        complain("Fuzz: set NODEAGENT_FUZZ_TARGET to one of: \(FuzzTargets.all.map(\.name).joined(separator: ", "))\n")
        exit(1)
    }
    return target
}()

// Linked with lld, libFuzzer's own `main` is taken from its archive and calls this directly;
// with another linker `Fuzz_main` below starts the same driver.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    selected(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}

@_cdecl("Fuzz_main")
func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    _ = selected
    var count = argc
    var args = argv
    return LLVMFuzzerRunDriver(&count, &args) { fuzzOne($0, $1) }
}
#else
@main
enum Fuzz {
    static func main() {
        let args = Array(CommandLine.arguments.dropFirst())
        guard let name = args.first, let target = FuzzTargets.named(name) else {
            complain("usage: Fuzz TARGET FILE...   (targets: \(FuzzTargets.all.map(\.name).joined(separator: ", ")))\n")
            exit(1)
        }
        for path in args.dropFirst() {
            let bytes: [UInt8]
            do {
                bytes = try FileReading.read(path)
            } catch {
                complain("Fuzz: \(error)\n")
                exit(1)
            }
            target(bytes)
            print("\(name): \(path): ok")
        }
    }
}
#endif
