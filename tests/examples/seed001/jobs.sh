curl http://localhost:8080/api/batch/jobs
