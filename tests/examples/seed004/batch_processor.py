#!/usr/bin/env python3
import requests
import json
import time
import sys

API_BASE = "http://localhost:8000/api/v1"

def upload_batch_csv(csv_file_path, description="Batch processing"):
    """Upload a batch CSV file."""
    url = f"{API_BASE}/analysis/batch/upload-csv"
    
    with open(csv_file_path, 'rb') as f:
        files = {'file': f}
        data = {
            'description': description,
            'priority': 'normal'
        }
        
        response = requests.post(url, files=files, data=data)
        response.raise_for_status()
        return response.json()

def start_batch_processing(batch_id, parallel_jobs=2):
    """Start batch processing."""
    url = f"{API_BASE}/analysis/batch/{batch_id}/start"
    
    data = {
        'parallel_jobs': parallel_jobs,
        'priority': 'normal'
    }
    
    response = requests.post(url, json=data)
    response.raise_for_status()
    return response.json()

def monitor_batch_progress(batch_id, check_interval=10):
    """Monitor batch processing progress."""
    url = f"{API_BASE}/analysis/batch/{batch_id}/status"
    
    print(f"Monitoring batch {batch_id}...")
    
    while True:
        response = requests.get(url)
        response.raise_for_status()
        status_data = response.json()
        
        status = status_data['status']
        progress = status_data['progress']
        completed = status_data['items_completed']
        total = status_data['items_total']
        
        print(f"Status: {status}, Progress: {progress}%, Items: {completed}/{total}")
        
        if status in ['completed', 'failed', 'cancelled']:
            return status_data
        
        time.sleep(check_interval)

def get_batch_results(batch_id):
    """Get batch processing results."""
    url = f"{API_BASE}/analysis/batch/{batch_id}/results"
    
    response = requests.get(url)
    response.raise_for_status()
    return response.json()

def main():
    if len(sys.argv) < 2:
        print("Usage: python batch_processor.py <csv_file_path>")
        sys.exit(1)
    
    csv_file_path = sys.argv[1]
    
    try:
        # Upload CSV
        print(f"Uploading batch CSV: {csv_file_path}")
        upload_result = upload_batch_csv(csv_file_path)
        batch_id = upload_result['batch_id']
        print(f"Batch uploaded successfully. Batch ID: {batch_id}")
        
        # Start processing
        print("Starting batch processing...")
        start_result = start_batch_processing(batch_id)
        print(f"Batch processing started with {start_result['items_processing']} parallel jobs")
        
        # Monitor progress
        final_status = monitor_batch_progress(batch_id)
        print(f"Batch processing finished with status: {final_status['status']}")
        
        # Get results
        if final_status['status'] == 'completed':
            print("Getting batch results...")
            results = get_batch_results(batch_id)
            
            # Save results
            results_file = f"batch_results_{batch_id}.json"
            with open(results_file, 'w') as f:
                json.dump(results, f, indent=2)
            print(f"Results saved to {results_file}")
            
            # Print summary
            summary = results['summary']
            print(f"\nBatch Summary:")
            print(f"  Total Items: {summary['items_total']}")
            print(f"  Completed: {summary['items_completed']}")
            print(f"  Failed: {summary['items_failed']}")
            print(f"  Average Confidence: {summary['average_confidence']:.3f}")
            print(f"  Processing Time: {summary['processing_time_seconds']:.1f} seconds")
        
    except requests.exceptions.RequestException as e:
        print(f"API Error: {e}")
        sys.exit(1)
    except Exception as e:
        print(f"Error: {e}")
        sys.exit(1)

if __name__ == "__main__":
    main()
