// Command redlock runs the redlock library's demo on embedded nodes.
//
// Usage:
//
//	redlock demo [flags]   contend for a lock on 5 local nodes while some crash
//	redlock help           print this help
package main

import (
	"fmt"
	"io"
	"os"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed (e.g. a safety check)
	exitUsage   = 2 // bad flags or arguments
)

const usage = `usage: redlock <command> [flags]

commands:
  demo    run contending workers on 5 embedded Redis nodes while nodes crash
  help    print this help

Run "redlock <command> -h" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "demo":
		return demoCommand(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "redlock: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}
