// Command warder is Warder's single binary: server, dev mode and CLI.
package main

import (
	"context"
	"os"
	_ "time/tzdata" // policies name time zones; a static binary may run where /usr/share/zoneinfo is missing

	"github.com/warderhq/warder/internal/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
