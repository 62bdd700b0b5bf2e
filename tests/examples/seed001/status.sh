curl http://localhost:8080/api/batch/status/batch_20240318_143022_0
