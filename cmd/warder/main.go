// Command warder is Warder's single binary: server, dev mode and CLI.
package main

import (
	"context"
	"os"

	"github.com/warderhq/warder/internal/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
