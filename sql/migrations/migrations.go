// Package migrations embeds the dbmate migrations so that the users binary
// carries its own schema.
package migrations

import "embed"

// FS holds every migration file, named <version>_<name>.sql.
//
//go:embed *.sql
var FS embed.FS
