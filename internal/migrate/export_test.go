package migrate

import (
	"context"
	"io"
	"io/fs"
	"strings"
	"testing/fstest"

	"github.com/amacneil/dbmate/v2/pkg/dbmate"
	"github.com/jackc/pgx/v5"

	"github.com/agynio/users/sql/migrations"
)

// UpTo applies the pending migrations up to and including version, as a
// release that shipped only those would: the state a newer release's
// migrations meet on a live database. dbmate has no target version of its
// own, so it is shown only the files up to version.
func UpTo(ctx context.Context, databaseURL string, log io.Writer, version string) error {
	upTo := fstest.MapFS{}
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		v, _, _ := strings.Cut(path, "_")
		if v > version { // fixed-width timestamps compare as strings
			return nil
		}
		b, err := fs.ReadFile(migrations.FS, path)
		upTo[path] = &fstest.MapFile{Data: b}
		return err
	})
	if err != nil {
		return err
	}
	return withLock(ctx, databaseURL, log, nil, func(m *dbmate.DB, _ *pgx.Conn) error {
		m.FS = upTo
		return m.Migrate()
	})
}
