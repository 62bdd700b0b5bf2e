# Clean up old completed batches (older than 7 days)
response = requests.post(f"{BASE_URL}/batch/cleanup", json={
    "days_old": 7
})

result = response.json()
print(f"Cleaned up {result['cleaned_count']} old batches")
